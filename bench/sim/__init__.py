"""The trace-driven simulator: the real selector, state machine and scaler policy,
on a simulated clock."""
