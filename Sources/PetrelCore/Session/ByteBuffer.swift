/// A growable byte buffer with a read index, owned by exactly one session.
///
/// One word inline: a pointer to a single allocation that holds the header (capacity, start,
/// end) and then the bytes, or nil while the buffer has no storage. A session has four of these
/// and a server keeps a session per connection, so an idle connection pays 32 bytes for them
/// rather than 128. Invariant: `0 <= start <= end <= capacity`.
/// It is `~Copyable` so that its storage has one owner and is freed in `deinit`: pointers
/// handed out by `readable` stay valid until the next mutating call.
@usableFromInline
struct ByteBuffer: ~Copyable {
    @usableFromInline
    struct Header {
        @usableFromInline var capacity: Int
        @usableFromInline var start: Int
        @usableFromInline var end: Int
    }

    @usableFromInline private(set) var storage: UnsafeMutablePointer<Header>?

    /// The bytes begin one cache line into the allocation (the header is 24 bytes), so that
    /// payloads stay 64-byte aligned for the word-wide masking loop.
    @usableFromInline static let headerSize = 64

    init() {}

    @inlinable deinit {
        self.storage?.deallocate()
    }

    @inlinable @inline(__always)
    var bytes: UnsafeMutableRawPointer { UnsafeMutableRawPointer(self.storage.unsafelyUnwrapped) + ByteBuffer.headerSize }

    var capacity: Int { self.storage?.pointee.capacity ?? 0 }

    @inlinable
    var count: Int {
        guard let h = self.storage else { return 0 }
        return h.pointee.end - h.pointee.start
    }

    @inlinable
    var isEmpty: Bool { self.count == 0 }

    @inlinable
    var readable: UnsafeRawBufferPointer {
        guard let h = self.storage else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return UnsafeRawBufferPointer(start: self.bytes + h.pointee.start, count: h.pointee.end - h.pointee.start)
    }

    @inlinable @inline(__always)
    mutating func reserve(_ extra: Int) {
        if let h = self.storage, h.pointee.capacity - h.pointee.end >= extra { return }
        self.grow(extra)
    }

    @usableFromInline
    mutating func grow(_ extra: Int) {
        let capacity = self.capacity
        let live = self.count
        if let h = self.storage {
            let start = h.pointee.start
            // Compact when the unread bytes are few and the dead prefix is worth reclaiming.
            if start > 0, capacity - live >= extra, live <= start {
                self.bytes.copyMemory(from: self.bytes + start, byteCount: live)
                h.pointee.start = 0
                h.pointee.end = live
                return
            }
        }
        var newCapacity = max(capacity * 2, 256 - ByteBuffer.headerSize)
        while newCapacity - live < extra { newCapacity *= 2 }
        let raw = UnsafeMutableRawPointer.allocate(byteCount: ByteBuffer.headerSize + newCapacity, alignment: 64)
        let fresh = raw.bindMemory(to: Header.self, capacity: 1)
        fresh.initialize(to: Header(capacity: newCapacity, start: 0, end: live))
        if let old = self.storage {
            (raw + ByteBuffer.headerSize).copyMemory(from: self.bytes + old.pointee.start, byteCount: live)
            old.deallocate()
        }
        self.storage = fresh
    }

    @inlinable @inline(__always)
    mutating func appendUninitialized(_ count: Int) -> UnsafeMutableRawPointer {
        self.reserve(count)
        let h = self.storage.unsafelyUnwrapped
        let at = self.bytes + h.pointee.end
        h.pointee.end += count
        return at
    }

    mutating func append(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0, let src = bytes.baseAddress else { return }
        self.appendUninitialized(bytes.count).copyMemory(from: src, byteCount: bytes.count)
    }

    /// Gives back bytes appended by `appendUninitialized` that were not written.
    mutating func trimEnd(_ count: Int) {
        guard count > 0 else { return }
        self.storage.unsafelyUnwrapped.pointee.end -= count
    }

    mutating func consume(_ count: Int) {
        guard count > 0, let h = self.storage else { return }
        h.pointee.start += count
        if h.pointee.start == h.pointee.end {
            h.pointee.start = 0
            h.pointee.end = 0
        }
    }

    /// Empties the buffer; storage above `keep` bytes is released so idle sessions stay small.
    mutating func clear(keepingUpTo keep: Int) {
        guard let h = self.storage else { return }
        if h.pointee.capacity > keep {
            h.deallocate()
            self.storage = nil
        } else {
            h.pointee.start = 0
            h.pointee.end = 0
        }
    }
}
