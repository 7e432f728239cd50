#if PETREL_ISAL
import CIsal
import Glibc

/// ISA-L's igzip, opened at run time: a program built with it starts, and compresses with zlib,
/// on a machine that lacks `libisal.so.2`. Only the four calls a compressor needs are looked up.
struct IsalLibrary: @unchecked Sendable {
    typealias StreamCall = @convention(c) (UnsafeMutablePointer<isal_zstream>?) -> Void
    typealias DeflateCall = @convention(c) (UnsafeMutablePointer<isal_zstream>?) -> Int32
    typealias TablesCall = @convention(c) (UnsafeMutablePointer<isal_zstream>?, UnsafeMutablePointer<isal_hufftables>?, Int32) -> Int32

    let initialize: StreamCall
    let reset: StreamCall
    let deflate: DeflateCall
    let setHufftables: TablesCall

    /// Loaded once, on first use; nil when the library or one of its calls is missing.
    static let shared: IsalLibrary? = IsalLibrary.open()

    private static func open() -> IsalLibrary? {
        guard let handle = dlopen("libisal.so.2", RTLD_NOW | RTLD_LOCAL) else { return nil }
        func call<T>(_ name: String, _: T.Type) -> T? {
            guard let p = dlsym(handle, name) else { return nil }
            return unsafeBitCast(p, to: T.self)
        }
        guard let initialize = call("isal_deflate_init", StreamCall.self),
            let reset = call("isal_deflate_reset", StreamCall.self),
            let deflate = call("isal_deflate", DeflateCall.self),
            let setHufftables = call("isal_deflate_set_hufftables", TablesCall.self)
        else {
            dlclose(handle)
            return nil
        }
        // The handle stays open for the life of the process: streams keep its code's addresses.
        return IsalLibrary(initialize: initialize, reset: reset, deflate: deflate, setHufftables: setHufftables)
    }
}

/// One igzip raw-deflate compressor at level 0 with igzip's static Huffman table: no per-message
/// tree building, which is most of zlib's cost on short messages (docs/benchmarks.md). The
/// stream (about 82 KiB, its hash table and history inline) lives at a fixed, 64-byte aligned
/// address, allocated here and released in `deinit`.
final class IsalStream: Deflater {
    private let library: IsalLibrary
    private let s: UnsafeMutablePointer<isal_zstream>

    /// nil without the library.
    init?(_ key: Deflater.Key) {
        guard let library = IsalLibrary.shared else { return nil }
        var raw: UnsafeMutableRawPointer? = nil
        guard posix_memalign(&raw, 64, MemoryLayout<isal_zstream>.size) == 0, let raw else {
            preconditionFailure("posix_memalign failed: out of memory")
        }
        // Zeroed once: igzip clears what it uses lazily, and valgrind should see no undefined read.
        memset(raw, 0, MemoryLayout<isal_zstream>.size)
        let s = raw.bindMemory(to: isal_zstream.self, capacity: 1)
        self.library = library
        self.s = s
        library.initialize(s)
        s.pointee.level = 0
        s.pointee.gzip_flag = UInt16(IGZIP_DEFLATE)
        // The window the peer agreed to, 8–15: igzip never refers further back than 2^hist_bits.
        s.pointee.hist_bits = UInt16(key.windowBits)
        s.pointee.flush = UInt16(SYNC_FLUSH)
        s.pointee.end_of_stream = 0
        let rc = library.setHufftables(s, nil, Int32(IGZIP_HUFFTABLE_STATIC))
        precondition(rc == COMP_OK, "isal_deflate_set_hufftables failed (\(rc))")
        super.init(key: key)
    }

    deinit {
        free(self.s)
    }

    /// Forgets the history; keeps level, window, flush and table (isal_deflate_reset's contract).
    override func reset() { self.library.reset(self.s) }

    override func compress(_ input: UnsafeRawBufferPointer, into out: inout ByteBuffer) {
        let s = self.s
        s.pointee.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: UInt8.self))
        s.pointee.avail_in = UInt32(input.count)
        while true {
            // The static table can expand a byte to 9 bits, more than zlib's halving guess.
            let room = max(input.count + input.count / 4 + 64, 256)
            let p = out.appendUninitialized(room)
            s.pointee.next_out = p.assumingMemoryBound(to: UInt8.self)
            s.pointee.avail_out = UInt32(room)
            let rc = self.library.deflate(s)
            let left = Int(s.pointee.avail_out)
            out.trimEnd(left)
            precondition(rc == COMP_OK, "isal_deflate failed (\(rc))")
            // Room left over means the flush is complete (igzip_lib.h, isal_deflate).
            if s.pointee.avail_in == 0 && left > 0 { break }
        }
        s.pointee.next_in = nil
        s.pointee.next_out = nil
    }
}
#endif
