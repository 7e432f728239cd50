import CLinux
import CPetrelABI
import Glibc
import PetrelCore
import PetrelRuntime

/// What a `petrel_server *` points to: the runtime server plus the caller's callbacks.
final class CServer: @unchecked Sendable {
    let server: Server
    let callbacks: petrel_server_callbacks
    /// With `queue_events`: where open, message, close and drain go instead of callbacks.
    let queue: EventQueue?

    /// Per loop (the low byte of a connection id names its loop): the connection whose
    /// on_message is running on that loop's thread, and the message. A send from inside the
    /// callback to that connection (an echo, a reply) then needs no lookup, no lock, no
    /// question about threads beyond one comparison, and no second UTF-8 check of text it
    /// received. Written only by that loop's thread. Another thread may read `thread` and `id`
    /// (relaxed atomics: `isCurrent`) and learns the slot is not its own; it never reads the rest.
    struct InCallback {
        /// The loop thread's pthread_t, as the trampoline last set it (0 before).
        var thread: UInt64 = 0
        var id: UInt64 = 0
        var connection: Unmanaged<Connection>?
        var payload = UnsafeRawBufferPointer(start: nil, count: 0)
    }
    let inCallback = UnsafeMutablePointer<InCallback>.allocate(capacity: 256)
    let maxMessageSize: Int
    /// Held while petrel_server_each_conn hands out a connection's pointer and while on_close's
    /// trampoline takes it: on_close never frees what a visitor is using.
    let visiting: VisitLock

    init(server: Server, callbacks: petrel_server_callbacks, queue: EventQueue?, visiting: VisitLock) {
        self.server = server
        self.callbacks = callbacks
        self.queue = queue
        self.visiting = visiting
        self.maxMessageSize = server.configuration.options.session.maxMessageSize
        self.inCallback.initialize(repeating: InCallback(), count: 256)
    }

    deinit {
        self.inCallback.deinitialize(count: 256)
        self.inCallback.deallocate()
    }

    /// Whether connection `id`'s on_message is running on the calling thread (then the rest of
    /// `slot` is this thread's to read).
    @inline(__always)
    static func isCurrent(_ slot: UnsafeMutablePointer<InCallback>, _ id: UInt64) -> Bool {
        petrel_load_relaxed(&slot.pointee.thread) == UInt64(UInt(pthread_self()))
            && petrel_load_relaxed(&slot.pointee.id) == id
    }

    var handle: OpaquePointer { OpaquePointer(Unmanaged.passUnretained(self).toOpaque()) }

    static func from(_ p: OpaquePointer?) -> CServer? {
        guard let p else { return nil }
        return Unmanaged<CServer>.fromOpaque(UnsafeRawPointer(p)).takeUnretainedValue()
    }
}

/// A C caller's pointers, handed back to its callbacks on the loop threads: the header has the
/// caller promise they may be used there, which Swift's checking cannot see.
struct CPointers: @unchecked Sendable {
    let userdata: UnsafeMutableRawPointer?
    let handle: OpaquePointer
}

/// The server's per-loop callback slots (`CServer.inCallback`), captured by on_message without
/// the server box itself (which owns the handlers: capturing it would be a cycle). Each slot is
/// touched only by its loop's thread.
struct CSlots: @unchecked Sendable {
    let base: UnsafeMutablePointer<CServer.InCallback>
}

/// Copies a caller's config struct that carries its size: fields the caller did not know about
/// keep their defaults, and a size of 0 means the caller never called the _init function.
func readSized<T>(_ p: UnsafePointer<T>, size: Int, into value: inout T) -> Bool {
    guard size > 0 else { return false }
    let n = min(size, MemoryLayout<T>.size)
    withUnsafeMutableBytes(of: &value) { dst in
        dst.baseAddress!.copyMemory(from: UnsafeRawPointer(p), byteCount: n)
    }
    return true
}

/// A C string as Swift, or nil if it is not valid UTF-8.
func string(_ p: UnsafePointer<CChar>) -> String? {
    String(validatingCString: p)
}

/// Calls `body` with `parts` as NUL-terminated C strings in one buffer, valid for the call (the
/// strings lent to on_http, on_upgrade and on_stomp).
func withCStrings<R>(_ parts: [String], _ body: ([UnsafePointer<CChar>]) -> R) -> R {
    var storage: [CChar] = []
    var offsets: [Int] = []
    for p in parts {
        offsets.append(storage.count)
        storage += p.utf8.map { CChar(bitPattern: $0) }
        storage.append(0)
    }
    return storage.withUnsafeBufferPointer { strings in body(offsets.map { strings.baseAddress! + $0 }) }
}

/// Splits "a, b,c" into ["a", "b", "c"].
func commaList(_ p: UnsafePointer<CChar>?) -> [String]? {
    guard let p, let s = string(p) else { return nil }
    return s.split(separator: ",").map { $0.trimmingCharacters() }.filter { !$0.isEmpty }
}

extension Substring {
    func trimmingCharacters() -> String {
        var s = self
        while s.first == " " || s.first == "\t" { s = s.dropFirst() }
        while s.last == " " || s.last == "\t" { s = s.dropLast() }
        return String(s)
    }
}

/// Copies `s` into a caller buffer with the wslay/rustls conventions: *len_out always gets the
/// length; PETREL_E_BUFFER_TOO_SMALL if it does not fit; NUL-terminated when there is room.
func copyOut(_ s: String, _ buf: UnsafeMutablePointer<CChar>?, _ cap: Int, _ lenOut: UnsafeMutablePointer<Int>?) -> petrel_status {
    copyOut(Array(s.utf8), buf, cap, lenOut)
}

/// `copyOut` for bytes (which may hold NULs: *len_out counts them all).
func copyOut(_ bytes: [UInt8], _ buf: UnsafeMutablePointer<CChar>?, _ cap: Int, _ lenOut: UnsafeMutablePointer<Int>?) -> petrel_status {
    guard let lenOut else { return PETREL_E_NULL }
    if bytes.count > cap || (bytes.count > 0 && buf == nil) {
        lenOut.pointee = bytes.count
        return PETREL_E_BUFFER_TOO_SMALL
    }
    if let buf {
        bytes.withUnsafeBytes { src in
            if let base = src.baseAddress { UnsafeMutableRawPointer(buf).copyMemory(from: base, byteCount: bytes.count) }
        }
        if bytes.count < cap { buf[bytes.count] = 0 }
    }
    lenOut.pointee = bytes.count
    return PETREL_OK
}

extension Connection {
    /// The C caller's pointer for this connection (conn_data), kept in the runtime's `userData`:
    /// a release store and an acquire load, so that what a thread wrote before setting it is
    /// seen by the loop thread that hands it to a callback. Once on_close has it, `userData`
    /// holds `closedData` and the pointer is nobody's business here any more.
    var cData: UnsafeMutableRawPointer? {
        @inline(__always) get { UnsafeMutableRawPointer(bitPattern: self.userData) }
        @inline(__always) set { self.userData = UInt(bitPattern: newValue) }
    }

    /// Marks the pointer as handed to on_close (no petrel_conn_set_data lands after this) and
    /// returns it.
    func takeDataForClose() -> UnsafeMutableRawPointer? {
        UnsafeMutableRawPointer(bitPattern: self.exchangeUserData(closedData))
    }
}

/// What `userData` holds once on_close has the connection's pointer: not an address user space
/// can have.
let closedData = UInt.max

/// A recursive pthread mutex: a visitor may close a connection of its own loop thread, whose
/// on_close then runs inside the visit, or visit again.
final class VisitLock: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)

    init() {
        var attributes = pthread_mutexattr_t()
        pthread_mutexattr_init(&attributes)
        pthread_mutexattr_settype(&attributes, Int32(PTHREAD_MUTEX_RECURSIVE))
        pthread_mutex_init(self.mutex, &attributes)
        pthread_mutexattr_destroy(&attributes)
    }

    deinit {
        pthread_mutex_destroy(self.mutex)
        self.mutex.deallocate()
    }

    func withLock<T>(_ body: () -> T) -> T {
        pthread_mutex_lock(self.mutex)
        defer { pthread_mutex_unlock(self.mutex) }
        return body()
    }
}
