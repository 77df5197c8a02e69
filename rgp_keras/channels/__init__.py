"""The width axis: pruning whole channels (fewer filters and units), coupled across the model."""
