# Test hooks for src/nack (filled by the loss-recovery work).
