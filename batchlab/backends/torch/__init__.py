"""The torch backend (`pip install 'batchlab[torch]'`): a small dense/MoE transformer
(`model`), the `TorchDevice` that runs batches on it (`device`), and calibration of the cost
model against it (`calibrate`, `calibrate_cli`). Import the submodules; this package imports
nothing, so that `batchlab.backends` never needs torch."""
