import CPetrelABI
import Glibc
import PetrelCore
import PetrelRuntime

/// The C status of each error type, and the text `petrel_strerror` gives for each status. The
/// protocol and handshake codes come from PetrelCore's error table (Errors.swift).
enum Status {
    static func of(_ e: RuntimeError) -> petrel_status { e.code.rawValue }

    static func of(_ s: SendStatus) -> petrel_status {
        switch s {
        case .ok: return PETREL_OK
        case .backpressure: return PETREL_E_BACKPRESSURE
        case .closed: return PETREL_E_CLOSED
        }
    }

    /// Every status the library can return, with its text: the runtime's and the C layer's
    /// own, then every case of PetrelCore's error table.
    static let texts: [Int32: String] = {
        var t: [Int32: String] = [
            PETREL_OK: "success",
            PETREL_E_AGAIN: "nothing available now; try again later",
            PETREL_E_BACKPRESSURE: "not queued: the connection's send buffer is over its limit (wait for on_drain)",
            PETREL_E_TIMEOUT: "the operation timed out",
            PETREL_E_REPLAY_GONE: "the replay ring no longer holds every message after that event id (send a snapshot)",
            PETREL_E_RECONNECTING: "not sent: the client is between connections and reconnecting (or queue_while_reconnecting)",
            PETREL_E_NULL: "a required pointer argument was NULL",
            PETREL_E_INVALID_ARGUMENT: "an argument is out of range or not valid UTF-8",
            PETREL_E_UNKNOWN_CONNECTION: "no open connection has this id",
            PETREL_E_STOPPED: "the server is not running",
            PETREL_E_WRONG_THREAD: "not allowed from this thread (a callback cannot destroy its own server)",
            PETREL_E_CLOSED: "the connection is closing or closed",
            PETREL_E_STATE: "not allowed in the current state",
            PETREL_E_BUFFER_TOO_SMALL: "the buffer is too small; *len_out says how much is needed",
            PETREL_E_CONFIG_SIZE: "the config struct's size field is not set: call its _init function",
            PETREL_E_NOMEM: "out of memory",
            PETREL_E_TOO_BIG: "the message is larger than the configured maximum",
            PETREL_E_RESOLVE: "the host name could not be resolved",
            PETREL_E_SOCKET: "a socket could not be created",
            PETREL_E_BIND: "the address could not be bound (in use, or not local)",
            PETREL_E_CONNECT: "the connection was refused or the host is unreachable",
            PETREL_E_CONNECT_TIMEOUT: "the connection attempt timed out",
            PETREL_E_URL: "not a valid URL (a ws:// or wss:// URL, or an engine_url)",
            PETREL_E_THREAD: "a loop thread could not be started",
            PETREL_E_HANDSHAKE: "the opening handshake failed",
            PETREL_E_PROXY: "the proxy refused the tunnel or failed (petrel_last_error gives its answer)",
            PETREL_E_ENGINE: "the pub/sub engine (Redis) could not be reached or refused (petrel_last_error says why); a publish that returns it published nothing, unless Redis timed out (then it may still be added)",
            PETREL_E_TLS: "TLS failed: certificate not trusted, expired or for another name; or a TLS file could not be loaded",
        ]
        for e in ProtocolError.allCases {
            t[e.code.rawValue] = e.limit == 0 && e.closeCode == .messageTooBig
                ? (e == .frameTooBig(limit: 0) ? "frame over the configured maximum size" : "message over the configured maximum size")
                : e.description
        }
        for e in UsageError.allCases { t[e.code.rawValue] = e.description }
        for e in HandshakeError.allCases { t[e.code.rawValue] = "handshake refused (\(e.httpStatus)): \(e.message)" }
        for e in ClientHandshakeError.allCases { t[e.code.rawValue] = e.message }
        return t
    }()

    /// The same texts as C strings, made once and never freed: static storage for `petrel_strerror`.
    nonisolated(unsafe) static let cTexts: [Int32: UnsafePointer<CChar>] = texts.mapValues { UnsafePointer(strdup($0)!) }
    nonisolated(unsafe) static let unknown: UnsafePointer<CChar> = UnsafePointer(strdup("unknown error")!)
}

/// The detail of the last failure on the calling thread, for `petrel_last_error`.
enum LastError {
    private static let key: pthread_key_t = {
        var k = pthread_key_t()
        pthread_key_create(&k) { free($0) }
        return k
    }()

    static func set(_ message: String) {
        free(pthread_getspecific(key))
        pthread_setspecific(key, strdup(message))
    }

    /// Records why `error` happened and returns its status.
    static func failed(_ error: RuntimeError) -> petrel_status {
        self.set(error.message)
        return Status.of(error)
    }

    static var current: UnsafePointer<CChar>? { pthread_getspecific(key).map { UnsafePointer($0.assumingMemoryBound(to: CChar.self)) } }
}

nonisolated(unsafe) private let emptyString: UnsafePointer<CChar> = UnsafePointer(strdup("")!)

@_cdecl("petrel_last_error")
public func petrel_last_error() -> UnsafePointer<CChar> { LastError.current ?? emptyString }
