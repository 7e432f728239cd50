import CLinux

/// Monotonic clock in milliseconds.
@inline(__always) func monotonicMilliseconds() -> UInt64 { petrel_monotonic_ms() }
