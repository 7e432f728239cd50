// petrel-echo: echoes every message back, as conformance, interop and benchmark runs need.
// Flags: --host H --port P --threads N --no-compression --max-message-size BYTES --compress-min BYTES
//        --compress-window-bits 8-15 --compress-memory-level 1-9 --compress-level 1-9
//        --compress-engine automatic|zlib|isal (the compressor; see DeflateEngine)
//        --deflate (keep the compression context between messages) --tls-cert PEM --tls-key PEM (wss://)
//        --engine URL (topics through Redis Streams: redis://host:port or a Unix socket path;
//        default: in-process)
// Paths (Benchmarks/PROTOCOL.md): `/sub` subscribes to the topic "bench"; every message sent on
// `/pub` is published to it; `/stomp` (or a STOMP subprotocol) speaks STOMP, where
// `/topic/bench` is that topic; any other path echoes.
import Glibc
import PetrelCore
import PetrelRuntime

func usage() -> Never {
    print("usage: petrel-echo [--host H] [--port P] [--threads N] [--no-compression] [--deflate] [--max-message-size BYTES] [--compress-min BYTES] [--compress-window-bits N] [--compress-memory-level N] [--compress-level N] [--compress-engine automatic|zlib|isal] [--tls-cert PEM --tls-key PEM] [--engine URL]")
    exit(2)
}

var configuration = ServerConfiguration(host: "127.0.0.1", port: 9001)
configuration.options.session.maxMessageSize = 64 * 1024 * 1024
configuration.options.session.maxFrameSize = 64 * 1024 * 1024
// An echo server answers at the rate it reads; let big messages through without backpressure refusals.
configuration.options.maxBackpressure = 256 * 1024 * 1024
// Compress every message, however short (the library default skips those under 32 bytes).
configuration.compression?.minimumSize = 0
var tlsCert: String?
var tlsKey: String?
var args = CommandLine.arguments.dropFirst()
while let flag = args.popFirst() {
    func value() -> String {
        guard let v = args.popFirst() else { usage() }
        return v
    }
    switch flag {
    case "--host": configuration.host = value()
    case "--port": configuration.port = UInt16(value()) ?? { usage() }()
    case "--threads": configuration.threads = Int(value()) ?? { usage() }()
    case "--no-compression": configuration.compression = nil
    // The benchmark contract's flag: compression on, keeping the context between messages
    // (the best ratio; the default keeps none, to hold no memory between messages).
    case "--deflate": configuration.compression?.localNoContextTakeover = false
    case "--max-message-size":
        let n = Int(value()) ?? { usage() }()
        configuration.options.session.maxMessageSize = n
        configuration.options.session.maxFrameSize = n
    case "--compress-min": configuration.compression?.minimumSize = Int(value()) ?? { usage() }()
    case "--compress-window-bits": configuration.compression?.localMaxWindowBits = Int(value()) ?? { usage() }()
    case "--compress-memory-level": configuration.compression?.memoryLevel = Int(value()) ?? { usage() }()
    case "--compress-level": configuration.compression?.compressionLevel = Int(value()) ?? { usage() }()
    case "--compress-engine": configuration.compression?.engine = DeflateEngine(rawValue: value()) ?? { usage() }()
    case "--tls-cert": tlsCert = value()
    case "--tls-key": tlsKey = value()
    case "--engine":
        do throws(RuntimeError) {
            configuration.engine = try Engine(url: value())
        } catch {
            print("petrel-echo: \(error)")
            exit(2)
        }
    case "-h", "--help": usage()
    default: usage()
    }
}

if let tlsCert, let tlsKey {
    configuration.tls = TLSServerConfiguration(certificateChainFile: tlsCert, privateKeyFile: tlsKey)
} else if tlsCert != nil || tlsKey != nil {
    usage()
}

// STOMP subscribers for the STOMP fan-out: SUBSCRIBE to /topic/bench.
configuration.stomp = StompConfiguration(paths: ["/stomp"])

/// Subscribers may queue a burst in fan-out runs: never drop or close them.
configuration.defaultTopicPolicy.maxQueuedMessages = Int.max

let publisher: UInt = 1
nonisolated(unsafe) var benchServer: Server?
func makeHandlers() -> Handlers {
    let handlers = Handlers()
    handlers.onOpen = { connection in
        switch connection.request?.path {
        case "/sub": connection.subscribe("bench")
        case "/pub": connection.userData = publisher
        default: break
        }
    }
    handlers.onMessage = { connection, kind, payload in
        if connection.userData == publisher {
            do {
                _ = try benchServer?.publish("bench", kind, Array(payload))
            } catch {
                print("petrel-echo: publish failed: \(error)")
            }
        } else {
            connection.send(kind, payload)
        }
    }
    return handlers
}
let server = Server(configuration: configuration, handlers: makeHandlers())
benchServer = server

do {
    try server.stopOnSignals(grace: 2_000)
    try server.start()
    if configuration.engine != .inProcess { print("petrel-echo: topics through \(configuration.engine)") }
    if let c = configuration.compression {
        print("petrel-echo compresses with \(c.compressor == .isal ? "ISA-L" : "zlib")")
    }
    print("petrel-echo listening\(configuration.tls == nil ? "" : " (TLS)") on \(configuration.host):\(server.port)")
    fflush(nil)
    while server.isRunning { sleep(1) }
} catch {
    print("petrel-echo: \(error)")
    exit(1)
}
