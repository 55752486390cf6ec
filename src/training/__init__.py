"""B1: the encoder's training engine (steps, epochs, runtime), its checkpoints and the loop."""
