#if PETREL_TSAN
import Glibc

/// ThreadSanitizer builds (`-Xswiftc -DPETREL_TSAN`): a mutex on `pthread_mutex_t`, which TSan
/// intercepts. `Synchronization.Mutex` locks with raw futex calls on Linux, which TSan cannot
/// see, so every state it guards would be reported as a race. Same API as the default build's.
public final class Lock<Value>: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private var value: Value

    public init(_ value: Value) {
        self.value = value
        pthread_mutex_init(self.mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(self.mutex)
        self.mutex.deallocate()
    }

    public func withLock<Result, E: Error>(_ body: (inout Value) throws(E) -> Result) throws(E) -> Result {
        pthread_mutex_lock(self.mutex)
        defer { pthread_mutex_unlock(self.mutex) }
        return try body(&self.value)
    }
}
#else
import Synchronization

/// The lock the runtime uses: `Synchronization.Mutex` (a futex on Linux). ThreadSanitizer
/// builds swap in a pthread mutex it can see (above).
public typealias Lock<Value: ~Copyable> = Mutex<Value>
#endif
