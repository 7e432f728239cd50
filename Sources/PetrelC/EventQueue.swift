import CPetrelABI
import Glibc
import PetrelRuntime

/// The queue behind `queue_events`: loop threads append records (open, message, close, drain);
/// one host thread takes them in batches with `petrel_server_next_events`. A pthread mutex and
/// two condition variables (on the monotonic clock); records are packed as the header says, so
/// a batch is one copy out.
final class EventQueue: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let notEmpty = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private let room = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var storage: UnsafeMutableRawPointer
    private var capacity: Int
    private var head = 0
    private var tail = 0
    let limit: Int
    /// Set when a stop begins: producers no longer wait for room (the consumer may be the
    /// thread that is stopping), so a stop never waits on the queue.
    private var stopping = false
    /// Set once the server has stopped: nothing more will come.
    private var closed = false
    /// External-poll mode: producers never wait (the loop runs on the consumer's thread).
    private var noWaiting = false

    static let recordSize = MemoryLayout<petrel_event_record>.size

    init(limit: Int) {
        self.limit = limit
        self.capacity = min(limit, 256 * 1024)
        self.storage = .allocate(byteCount: self.capacity, alignment: 8)
        pthread_mutex_init(self.mutex, nil)
        var attr = pthread_condattr_t()
        pthread_condattr_init(&attr)
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
        pthread_cond_init(self.notEmpty, &attr)
        pthread_cond_init(self.room, &attr)
        pthread_condattr_destroy(&attr)
    }

    deinit {
        pthread_cond_destroy(self.notEmpty)
        pthread_cond_destroy(self.room)
        pthread_mutex_destroy(self.mutex)
        self.mutex.deallocate()
        self.notEmpty.deallocate()
        self.room.deallocate()
        self.storage.deallocate()
    }

    /// Appends one record (a loop thread). Waits while the queue is over its limit, unless it
    /// is empty (a record bigger than the limit still goes through) or a stop has begun.
    func push(type: Int32, conn: UInt64, kind: Int32 = 0, code: UInt16 = 0, _ payload: UnsafeRawBufferPointer) {
        let padded = (payload.count + 7) & ~7
        let size = EventQueue.recordSize + padded
        pthread_mutex_lock(self.mutex)
        defer { pthread_mutex_unlock(self.mutex) }
        while !self.stopping && !self.noWaiting && self.tail - self.head > 0 && self.tail - self.head + size > self.limit {
            pthread_cond_wait(self.room, self.mutex)
        }
        if self.closed { return }
        self.reserve(size)
        let at = self.storage + self.tail
        at.storeBytes(
            of: petrel_event_record(conn: conn, len: UInt32(payload.count), code: code, type: UInt8(type), kind: UInt8(truncatingIfNeeded: kind)),
            as: petrel_event_record.self)
        if let base = payload.baseAddress, payload.count > 0 {
            (at + EventQueue.recordSize).copyMemory(from: base, byteCount: payload.count)
        }
        if padded > payload.count { (at + EventQueue.recordSize + payload.count).initializeMemory(as: UInt8.self, repeating: 0, count: padded - payload.count) }
        let wasEmpty = self.tail == self.head
        self.tail += size
        if wasEmpty { pthread_cond_signal(self.notEmpty) }
    }

    /// Room for `size` more bytes at the tail: slides the live bytes to the front, or grows.
    private func reserve(_ size: Int) {
        if self.tail + size <= self.capacity { return }
        let live = self.tail - self.head
        if live + size <= self.capacity && self.head > 0 {
            self.storage.copyMemory(from: self.storage + self.head, byteCount: live)
        } else {
            var grown = self.capacity * 2
            while grown < live + size { grown *= 2 }
            let fresh = UnsafeMutableRawPointer.allocate(byteCount: grown, alignment: 8)
            fresh.copyMemory(from: self.storage + self.head, byteCount: live)
            self.storage.deallocate()
            self.storage = fresh
            self.capacity = grown
        }
        self.head = 0
        self.tail = live
    }

    /// Copies whole records into `buf` (the consumer). See `petrel_server_next_events`.
    func take(timeoutMilliseconds: Int32, into buf: UnsafeMutableRawPointer?, capacity cap: Int, length: inout Int) -> Int32 {
        pthread_mutex_lock(self.mutex)
        defer { pthread_mutex_unlock(self.mutex) }
        if self.tail == self.head && !self.closed {
            if timeoutMilliseconds < 0 {
                while self.tail == self.head && !self.closed { pthread_cond_wait(self.notEmpty, self.mutex) }
            } else {
                var deadline = timespec()
                clock_gettime(CLOCK_MONOTONIC, &deadline)
                let ns = Int(deadline.tv_nsec) + Int(timeoutMilliseconds % 1000) * 1_000_000
                deadline.tv_sec += Int(timeoutMilliseconds / 1000) + ns / 1_000_000_000
                deadline.tv_nsec = ns % 1_000_000_000
                while self.tail == self.head && !self.closed {
                    if pthread_cond_timedwait(self.notEmpty, self.mutex, &deadline) == ETIMEDOUT { break }
                }
            }
        }
        if self.tail == self.head { return self.closed ? PETREL_E_STOPPED : PETREL_E_TIMEOUT }
        // Whole records only.
        var end = self.head
        while end < self.tail {
            let len = Int((self.storage + end).load(as: petrel_event_record.self).len)
            let size = EventQueue.recordSize + ((len + 7) & ~7)
            if end - self.head + size > cap { break }
            end += size
        }
        if end == self.head {
            let len = Int((self.storage + end).load(as: petrel_event_record.self).len)
            length = EventQueue.recordSize + ((len + 7) & ~7)
            return PETREL_E_BUFFER_TOO_SMALL
        }
        guard let buf else { return PETREL_E_NULL }
        buf.copyMemory(from: self.storage + self.head, byteCount: end - self.head)
        length = end - self.head
        self.head = end
        if self.head == self.tail {
            self.head = 0
            self.tail = 0
        }
        pthread_cond_broadcast(self.room)
        return PETREL_OK
    }

    func neverWait() {
        pthread_mutex_lock(self.mutex)
        self.noWaiting = true
        pthread_mutex_unlock(self.mutex)
    }

    /// A stop begins: producers stop waiting for room.
    func beginStop() {
        pthread_mutex_lock(self.mutex)
        self.stopping = true
        pthread_cond_broadcast(self.room)
        pthread_mutex_unlock(self.mutex)
    }

    /// The server stopped: the consumer gets what is left, then PETREL_E_STOPPED.
    func close() {
        pthread_mutex_lock(self.mutex)
        self.stopping = true
        self.closed = true
        pthread_cond_broadcast(self.room)
        pthread_cond_broadcast(self.notEmpty)
        pthread_mutex_unlock(self.mutex)
    }
}

@_cdecl("petrel_server_next_events")
public func petrel_server_next_events(
    _ server: OpaquePointer?, _ timeoutMs: Int32, _ buf: UnsafeMutableRawPointer?, _ cap: Int, _ lenOut: UnsafeMutablePointer<Int>?
) -> Int32 {
    guard let s = CServer.from(server), let lenOut else { return PETREL_E_NULL }
    guard let queue = s.queue else { return PETREL_E_STATE }
    if s.server.isCurrentLoopThread { return PETREL_E_WRONG_THREAD }
    var length = 0
    let status = queue.take(timeoutMilliseconds: timeoutMs, into: buf, capacity: max(0, cap), length: &length)
    lenOut.pointee = status == PETREL_OK || status == PETREL_E_BUFFER_TOO_SMALL ? length : 0
    return status
}
