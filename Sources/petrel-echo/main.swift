// petrel-echo: echoes every message back, as conformance, interop and benchmark runs need.
// Flags: --host H --port P --threads N --no-compression --max-message-size BYTES --compress-min BYTES
//        --tls-cert PEM --tls-key PEM (wss://)
import Glibc
import PetrelCore
import PetrelRuntime

func usage() -> Never {
    print("usage: petrel-echo [--host H] [--port P] [--threads N] [--no-compression] [--max-message-size BYTES] [--compress-min BYTES] [--tls-cert PEM --tls-key PEM]")
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
    case "--max-message-size":
        let n = Int(value()) ?? { usage() }()
        configuration.options.session.maxMessageSize = n
        configuration.options.session.maxFrameSize = n
    case "--compress-min": configuration.compression?.minimumSize = Int(value()) ?? { usage() }()
    case "--tls-cert": tlsCert = value()
    case "--tls-key": tlsKey = value()
    case "-h", "--help": usage()
    default: usage()
    }
}

if let tlsCert, let tlsKey {
    configuration.tls = TLSServerConfiguration(certificateChainFile: tlsCert, privateKeyFile: tlsKey)
} else if tlsCert != nil || tlsKey != nil {
    usage()
}

let handlers = Handlers()
handlers.onMessage = { connection, kind, payload in
    connection.send(kind, payload)
}
let server = Server(configuration: configuration, handlers: handlers)

do {
    try server.stopOnSignals(grace: 2_000)
    try server.start()
    print("petrel-echo listening\(configuration.tls == nil ? "" : " (TLS)") on \(configuration.host):\(server.port)")
    fflush(nil)
    while server.isRunning { sleep(1) }
} catch {
    print("petrel-echo: \(error)")
    exit(1)
}
