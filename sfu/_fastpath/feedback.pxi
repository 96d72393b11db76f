# Test hooks for src/feedback (filled by the loss-recovery work).
