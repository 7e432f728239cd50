/// RFC 7692 permessage-deflate: negotiation (§5, §7.1).
///
/// Parameters are named from this endpoint's point of view: *local* is our compressor (the
/// `server_*` parameters when we are the server, `client_*` when the client); *remote* is the
/// peer's compressor, whose output we inflate.

import Glibc

/// What this endpoint allows and prefers.
public struct DeflateOptions: Hashable, Sendable {
    /// Reset our compressor after every message (less memory, less compression). A server also
    /// agrees to this whenever a client asks for it.
    public var localNoContextTakeover = false
    /// Ask the peer to reset its compressor after every message, so we hold no inflate state between messages.
    public var remoteNoContextTakeover = false
    /// The library that compresses what we send (zlib always inflates what we receive). Declared
    /// here, next to the flags, where it takes no room of its own.
    public var engine = DeflateEngine.automatic
    /// Our compressor's LZ77 window, 8–15 bits. A window of 8 is honoured with Huffman-only
    /// coding (zlib's raw deflate has no 256-byte window).
    public var localMaxWindowBits = 15
    /// The largest window we ask the peer to compress with, 8–15 bits.
    public var remoteMaxWindowBits = 15
    /// zlib memLevel for our compressor, 1–9 (memory is `2^(memLevel+9)` bytes plus the window).
    public var memoryLevel = 8
    /// zlib compression level, 1 (fastest) – 9 (smallest). 1 suits small, repetitive messages.
    public var compressionLevel = 1
    /// Messages shorter than this are sent uncompressed (RSV1 clear).
    public var minimumSize = 32

    public init() {}

    /// The engine that compresses with these options on this machine: `.zlib` or `.isal`.
    public var compressor: DeflateEngine {
        self.engine.resolved(compressionLevel: self.compressionLevel) == .isal ? .isal : .zlib
    }

    /// The compressor these options give for a window, with `engine` when the caller resolved it
    /// already (a session does, once), else resolved here.
    func deflaterKey(windowBits: Int, engine: DeflateEngine.Resolved? = nil) -> Deflater.Key {
        Deflater.Key(windowBits: windowBits, memoryLevel: self.memoryLevel, level: self.compressionLevel,
                     engine: engine ?? self.engine.resolved(compressionLevel: self.compressionLevel))
    }
}

/// Which library compresses outgoing messages. Both produce plain raw deflate that any
/// permessage-deflate peer inflates; they differ in cost and memory (docs/benchmarks.md,
/// "Compression engines").
public enum DeflateEngine: String, Hashable, Sendable {
    /// ISA-L when it is available and `compressionLevel` is 1 (the default), zlib otherwise. The
    /// environment variable `PETREL_DEFLATE_ENGINE` (`zlib` or `isal`), read once per process,
    /// overrides this choice, and only this one.
    case automatic
    /// zlib at `compressionLevel` and `memoryLevel`.
    case zlib
    /// ISA-L's igzip at its level 0 with its static Huffman table (`compressionLevel` and
    /// `memoryLevel` do not apply); zlib where ISA-L is not available.
    case isal

    enum Resolved: Hashable { case zlib, isal }

    /// ISA-L can compress here: Petrel was built with libisal-dev's header and `libisal.so.2` loads.
    public static var isalAvailable: Bool {
        #if PETREL_ISAL
        return IsalLibrary.shared != nil
        #else
        return false
        #endif
    }

    /// `PETREL_DEFLATE_ENGINE`, when set to an engine's name.
    static let fromEnvironment: DeflateEngine? = {
        guard let value = getenv("PETREL_DEFLATE_ENGINE") else { return nil }
        return DeflateEngine(rawValue: String(cString: value))
    }()

    /// The engine that will compress. Only `automatic` looks at the environment.
    public var effective: DeflateEngine {
        switch self {
        case .automatic: return DeflateEngine.fromEnvironment.map { $0 == .automatic ? self : $0 } ?? self
        default: return self
        }
    }

    func resolved(compressionLevel: Int) -> Resolved {
        guard DeflateEngine.isalAvailable else { return .zlib }
        switch self.effective {
        case .zlib: return .zlib
        case .isal: return .isal
        case .automatic: return compressionLevel <= 1 ? .isal : .zlib
        }
    }
}

/// The parameters both ends agreed to.
public struct DeflateParameters: Hashable, Sendable {
    public var localNoContextTakeover = false
    public var remoteNoContextTakeover = false
    public var localMaxWindowBits = 15
    public var remoteMaxWindowBits = 15

    public init(
        localNoContextTakeover: Bool = false, remoteNoContextTakeover: Bool = false, localMaxWindowBits: Int = 15,
        remoteMaxWindowBits: Int = 15
    ) {
        self.localNoContextTakeover = localNoContextTakeover
        self.remoteNoContextTakeover = remoteNoContextTakeover
        self.localMaxWindowBits = localMaxWindowBits
        self.remoteMaxWindowBits = remoteMaxWindowBits
    }
}

/// permessage-deflate as negotiated for one connection: the agreed parameters plus our tuning.
public struct Compression: Hashable, Sendable {
    public var parameters: DeflateParameters
    public var options: DeflateOptions

    public init(parameters: DeflateParameters, options: DeflateOptions = DeflateOptions()) {
        self.parameters = parameters
        self.options = options
    }
}

public enum PerMessageDeflate {
    public static let name = "permessage-deflate"

    /// The four parameters of one offer or response, checked for §7.1's rules: no unknown or
    /// repeated parameter, no value on the `*_no_context_takeover` ones, window bits a decimal 8–15
    /// (`client_max_window_bits` may have no value in an offer).
    struct Params {
        var serverNoContextTakeover = false
        var clientNoContextTakeover = false
        var serverMaxWindowBits: Int? = nil
        /// `.some(nil)`: present without a value.
        var clientMaxWindowBits: Int?? = nil

        init?(_ ext: ExtensionOffer, isOffer: Bool) {
            var seen = Set<String>()
            for p in ext.parameters {
                let name = p.name.lowercasedASCII
                guard seen.insert(name).inserted else { return nil }
                switch name {
                case "server_no_context_takeover":
                    guard p.value == nil else { return nil }
                    self.serverNoContextTakeover = true
                case "client_no_context_takeover":
                    guard p.value == nil else { return nil }
                    self.clientNoContextTakeover = true
                case "server_max_window_bits":
                    guard let bits = Params.windowBits(p.value) else { return nil }
                    self.serverMaxWindowBits = bits
                case "client_max_window_bits":
                    if let v = p.value {
                        guard let bits = Params.windowBits(v) else { return nil }
                        self.clientMaxWindowBits = .some(bits)
                    } else {
                        guard isOffer else { return nil }  // a response must give a value
                        self.clientMaxWindowBits = .some(nil)
                    }
                default:
                    return nil
                }
            }
        }

        /// 1*DIGIT without leading zeros, 8–15 (§7.1.2).
        static func windowBits(_ value: String?) -> Int? {
            guard let v = value, (1...2).contains(v.utf8.count), v.utf8.first != UInt8(ascii: "0"),
                v.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let n = Int(v), (8...15).contains(n)
            else { return nil }
            return n
        }
    }

    // MARK: Server

    /// Reads the client's offers in order and accepts the first acceptable one (§5.1); the rest
    /// are declined. Offers with unknown or repeated parameters or invalid values are declined.
    /// - Returns: the extension to put in the response and the agreed compression, or nil when
    ///   every offer is declined (the connection then goes on uncompressed).
    public static func negotiate(offers: [ExtensionOffer], options: DeflateOptions) -> (
        response: ExtensionOffer, compression: Compression
    )? {
        for offer in offers where offer.name.lowercasedASCII == self.name {
            guard let p = Params(offer, isOffer: true) else { continue }
            var response = ExtensionOffer(name: self.name)
            var agreed = DeflateParameters()
            // §7.1.1.1: honour server_no_context_takeover; we may also add it ourselves.
            if p.serverNoContextTakeover || options.localNoContextTakeover {
                response.parameters.append(ExtensionParameter("server_no_context_takeover"))
                agreed.localNoContextTakeover = true
            }
            // §7.1.1.2: the server may always ask the client not to keep context.
            if p.clientNoContextTakeover || options.remoteNoContextTakeover {
                response.parameters.append(ExtensionParameter("client_no_context_takeover"))
                agreed.remoteNoContextTakeover = true
            }
            // §7.1.2.1: answer a server_max_window_bits limit with the same or a smaller value. Without
            // one we still compress with our own (smaller or equal) window, which any inflater accepts.
            agreed.localMaxWindowBits = min(options.localMaxWindowBits, p.serverMaxWindowBits ?? 15)
            if p.serverMaxWindowBits != nil {
                response.parameters.append(ExtensionParameter("server_max_window_bits", String(agreed.localMaxWindowBits)))
            }
            // §7.1.2.2: client_max_window_bits may be answered only if offered; a value offered caps ours.
            if case .some(let offered) = p.clientMaxWindowBits {
                let bits = min(options.remoteMaxWindowBits, offered ?? 15)
                if bits < 15 || offered != nil {
                    response.parameters.append(ExtensionParameter("client_max_window_bits", String(bits)))
                }
                agreed.remoteMaxWindowBits = bits
            }
            return (response, Compression(parameters: agreed, options: options))
        }
        return nil
    }

    // MARK: Client

    /// The offer a client sends for `options`.
    public static func offer(options: DeflateOptions) -> ExtensionOffer {
        var offer = ExtensionOffer(name: self.name)
        if options.remoteNoContextTakeover { offer.parameters.append(ExtensionParameter("server_no_context_takeover")) }
        if options.localNoContextTakeover { offer.parameters.append(ExtensionParameter("client_no_context_takeover")) }
        if options.remoteMaxWindowBits < 15 {
            offer.parameters.append(ExtensionParameter("server_max_window_bits", String(options.remoteMaxWindowBits)))
        }
        // Always say we can limit our window (the value, when below 15, caps it ourselves).
        offer.parameters.append(
            ExtensionParameter("client_max_window_bits", options.localMaxWindowBits < 15 ? String(options.localMaxWindowBits) : nil))
        return offer
    }

    /// The offers a client sends, in order of preference: `offer(options:)`, then (unless we
    /// already give up context takeover) the same with `client_no_context_takeover`, so that a
    /// server that accepts compression only without client context takeover can pick it while
    /// every other server keeps the better-compressing first offer.
    public static func offers(options: DeflateOptions) -> [ExtensionOffer] {
        let first = self.offer(options: options)
        guard !options.localNoContextTakeover else { return [first] }
        var fallback = options
        fallback.localNoContextTakeover = true
        return [first, self.offer(options: fallback)]
    }

    /// Validates the server's answer to `offers(options:)`: only parameters we allow, values within
    /// what we offered.
    public static func accept(response: ExtensionOffer, options: DeflateOptions) -> Result<Compression, ClientHandshakeError> {
        guard response.name.lowercasedASCII == self.name else {
            return .failure(.unexpectedExtension(response.name))
        }
        guard let p = Params(response, isOffer: false) else {
            return .failure(.invalidExtensionParameters("'\(response)' has an unknown, repeated or invalid parameter"))
        }
        var agreed = DeflateParameters()
        agreed.remoteNoContextTakeover = p.serverNoContextTakeover
        // The server may require us to drop context, whether or not we offered to.
        agreed.localNoContextTakeover = p.clientNoContextTakeover || options.localNoContextTakeover
        if let bits = p.serverMaxWindowBits {
            if options.remoteMaxWindowBits < 15 && bits > options.remoteMaxWindowBits {
                return .failure(.invalidExtensionParameters("server_max_window_bits=\(bits) exceeds the \(options.remoteMaxWindowBits) offered"))
            }
            agreed.remoteMaxWindowBits = bits
        }
        agreed.localMaxWindowBits = options.localMaxWindowBits
        if case .some(.some(let bits)) = p.clientMaxWindowBits {
            if bits > options.localMaxWindowBits {
                return .failure(.invalidExtensionParameters("client_max_window_bits=\(bits) exceeds the \(options.localMaxWindowBits) offered"))
            }
            agreed.localMaxWindowBits = bits
        }
        return .success(Compression(parameters: agreed, options: options))
    }
}

extension String {
    var lowercasedASCII: String {
        String(decoding: self.utf8.map(ASCII.lower), as: UTF8.self)
    }
}
