/// A first-in, first-out list of object references owned by one loop thread: a connection's
/// queued topic frames, the loop's connections with output to flush.
///
/// Why not an `Array`: these lists grow by one element per delivery and empty once per loop
/// turn, and an array pays for that in ways the profile shows per fan-out delivery (a
/// uniqueness check and a capacity check per append, a generic `replaceSubrange` and a
/// destroy loop per emptying, a retain per element when iterated). Here each element costs one
/// retain when it is appended and one release when it is removed; reading one lends it without
/// a reference count.
///
/// One word inline (a connection pays 8 bytes for it while idle): a pointer to a single
/// allocation holding the header and the references, or nil while empty and never used.
/// Storage up to `keepCapacity` elements is kept when the list empties, so a busy subscriber
/// does not allocate per message.
///
/// Removal releases elements before it updates the list: an element's deinit must not touch
/// the list it is leaving. Connections and shared frames, the two kinds held, do not (their
/// deinits free only their own storage).
struct RefQueue<Element: AnyObject>: ~Copyable {
    private struct Header {
        var capacity: Int
        var head: Int
        var end: Int
    }

    private var storage: UnsafeMutablePointer<Header>?

    /// Element storage follows the header (24 bytes, rounded to 32).
    private static var headerSize: Int { 32 }
    static var keepCapacity: Int { 64 }

    init() {}

    deinit {
        guard let h = self.storage else { return }
        let slots = RefQueue.slots(h)
        for i in h.pointee.head..<h.pointee.end { slots[i].release() }
        UnsafeMutableRawPointer(h).deallocate()
    }

    @inline(__always)
    private static func slots(_ h: UnsafeMutablePointer<Header>) -> UnsafeMutablePointer<Unmanaged<Element>> {
        (UnsafeMutableRawPointer(h) + RefQueue.headerSize).assumingMemoryBound(to: Unmanaged<Element>.self)
    }

    var count: Int {
        @inline(__always) get {
            guard let h = self.storage else { return 0 }
            return h.pointee.end - h.pointee.head
        }
    }

    var isEmpty: Bool {
        @inline(__always) get { self.count == 0 }
    }

    /// The `i`th element from the front, lent to `body` without a reference count.
    @inline(__always)
    func with<R>(_ i: Int, _ body: (Element) -> R) -> R {
        let h = self.storage.unsafelyUnwrapped
        return RefQueue.slots(h)[h.pointee.head + i]._withUnsafeGuaranteedRef(body)
    }

    /// The `i`th element from the front, still owned by the list: valid while it stays in it.
    @inline(__always)
    func unmanaged(_ i: Int) -> Unmanaged<Element> {
        let h = self.storage.unsafelyUnwrapped
        return RefQueue.slots(h)[h.pointee.head + i]
    }

    /// Appends `element`, retaining it.
    @inline(__always)
    mutating func append(_ element: Element) {
        if let h = self.storage, h.pointee.end < h.pointee.capacity {
            RefQueue.slots(h)[h.pointee.end] = Unmanaged.passRetained(element)
            h.pointee.end += 1
            return
        }
        self.appendGrowing(element)
    }

    private mutating func appendGrowing(_ element: Element) {
        let live = self.count
        if let h = self.storage, h.pointee.head > 0 {
            // Room at the front: move the live elements down.
            let slots = RefQueue.slots(h)
            slots.update(from: slots + h.pointee.head, count: live)
            h.pointee.head = 0
            h.pointee.end = live
        } else {
            let capacity = max(8, (self.storage?.pointee.capacity ?? 0) * 2)
            let raw = UnsafeMutableRawPointer.allocate(
                byteCount: RefQueue.headerSize + capacity * MemoryLayout<Unmanaged<Element>>.stride, alignment: 16)
            let fresh = raw.bindMemory(to: Header.self, capacity: 1)
            fresh.initialize(to: Header(capacity: capacity, head: 0, end: live))
            if let old = self.storage {
                RefQueue.slots(fresh).update(from: RefQueue.slots(old) + old.pointee.head, count: live)
                UnsafeMutableRawPointer(old).deallocate()
            }
            self.storage = fresh
        }
        self.append(element)
    }

    /// Removes (and releases) the first `n` elements.
    mutating func removeFirst(_ n: Int) {
        guard n > 0, let h = self.storage else { return }
        let head = h.pointee.head
        let end = head &+ n
        precondition(end <= h.pointee.end, "RefQueue.removeFirst past the end")
        let slots = RefQueue.slots(h)
        var i = head
        repeat {
            slots[i].release()
            i &+= 1
        } while i < end
        if end == h.pointee.end { self.emptied(h) } else { h.pointee.head = end }
    }

    /// Removes (and releases) every element; `keepingCapacity` keeps storage of any size (the
    /// loop's own lists), else only up to `keepCapacity` elements.
    mutating func removeAll(keepingCapacity: Bool = false) {
        guard let h = self.storage else { return }
        let slots = RefQueue.slots(h)
        for i in h.pointee.head..<h.pointee.end { slots[i].release() }
        self.emptied(h, keepingCapacity: keepingCapacity)
    }

    @inline(__always)
    private mutating func emptied(_ h: UnsafeMutablePointer<Header>, keepingCapacity: Bool = false) {
        if !keepingCapacity && h.pointee.capacity > RefQueue.keepCapacity {
            UnsafeMutableRawPointer(h).deallocate()
            self.storage = nil
        } else {
            h.pointee.head = 0
            h.pointee.end = 0
        }
    }
}
