"""Devices that execute a Batch: the affine teaching model (`affine`) and a real torch
transformer (`torch/`: model, device, calibration). Cost-model devices live in
`batchlab.costmodel`."""
