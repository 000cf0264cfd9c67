"""The stream processor: a faust app around the pure decision engine."""
