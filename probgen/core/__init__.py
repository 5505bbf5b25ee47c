"""What every layer may import: program inspection, results, validation, checkpoints, paths,
the model protocol. Imports nothing else of probgen."""
