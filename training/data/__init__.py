"""hop.training.data: readers, converters and the training dataset of hop-live's clip format."""
