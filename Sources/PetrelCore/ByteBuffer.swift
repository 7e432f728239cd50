/// A growable byte buffer with a read index, owned by exactly one session.
///
/// Invariant: `0 <= start <= end <= capacity`; `base` is nil only while `capacity == 0`.
/// It is `~Copyable` so that its storage has one owner and is freed in `deinit`: pointers
/// handed out by `readable` stay valid until the next mutating call.
struct ByteBuffer: ~Copyable {
    var base: UnsafeMutableRawPointer?
    var capacity: Int = 0
    var start: Int = 0
    var end: Int = 0

    init() {}

    deinit {
        self.base?.deallocate()
    }

    var count: Int { self.end - self.start }

    var isEmpty: Bool { self.end == self.start }

    /// The unread bytes. Valid until the next mutating call.
    var readable: UnsafeRawBufferPointer {
        guard let base = self.base else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return UnsafeRawBufferPointer(start: base + self.start, count: self.end - self.start)
    }

    /// Makes room for `extra` more bytes after `end`, compacting or growing as needed.
    mutating func reserve(_ extra: Int) {
        if self.capacity - self.end >= extra { return }
        self.grow(extra)
    }

    mutating func grow(_ extra: Int) {
        let live = self.end - self.start
        // Compact when the unread bytes are few and the dead prefix is worth reclaiming.
        if let base = self.base, self.start > 0, self.capacity - live >= extra, live <= self.start {
            (base).copyMemory(from: base + self.start, byteCount: live)
            self.start = 0
            self.end = live
            return
        }
        var newCapacity = max(self.capacity * 2, 256)
        while newCapacity - live < extra { newCapacity *= 2 }
        let fresh = UnsafeMutableRawPointer.allocate(byteCount: newCapacity, alignment: 16)
        if let base = self.base {
            fresh.copyMemory(from: base + self.start, byteCount: live)
            base.deallocate()
        }
        self.base = fresh
        self.capacity = newCapacity
        self.start = 0
        self.end = live
    }

    /// Appends `count` bytes whose content the caller writes through the returned pointer.
    mutating func appendUninitialized(_ count: Int) -> UnsafeMutableRawPointer {
        self.reserve(count)
        let at = self.base.unsafelyUnwrapped + self.end
        self.end += count
        return at
    }

    mutating func append(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0, let src = bytes.baseAddress else { return }
        self.appendUninitialized(bytes.count).copyMemory(from: src, byteCount: bytes.count)
    }

    /// Gives back bytes appended by `appendUninitialized` that were not written.
    mutating func trimEnd(_ count: Int) {
        self.end -= count
    }

    mutating func consume(_ count: Int) {
        self.start += count
        if self.start == self.end {
            self.start = 0
            self.end = 0
        }
    }

    /// Empties the buffer; storage above `keep` bytes is released so idle sessions stay small.
    mutating func clear(keepingUpTo keep: Int) {
        self.start = 0
        self.end = 0
        if self.capacity > keep {
            self.base?.deallocate()
            self.base = nil
            self.capacity = 0
        }
    }
}
