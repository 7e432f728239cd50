import PetrelCore

/// Milliseconds, as every timeout in the runtime is given (0 disables the timer where noted).
public typealias Milliseconds = Int

/// What happens to a subscriber that cannot keep up with a topic.
public enum SlowConsumerPolicy: Sendable, Hashable {
    /// Keep the newest messages: the oldest queued one is dropped for each new one.
    case dropOldest
    /// Keep the oldest: new messages are dropped while the queue is full.
    case dropNewest
    /// Keep only the newest message per key (a publish names its key, e.g. a ticker): what a
    /// price feed wants. Messages published without a key are queued and never coalesced.
    case coalesceByKey
    /// Close the subscriber with this code (1008 or 1013) and a reason saying why.
    case close(CloseCode)
}

/// Per-topic behaviour.
public struct TopicPolicy: Sendable, Hashable {
    public var slowConsumer: SlowConsumerPolicy = .close(.policyViolation)
    /// Messages a slow subscriber may have queued (beyond its socket buffer limit) before the
    /// policy applies.
    public var maxQueuedMessages = 1024
    /// Recent messages kept for replay to clients that resume with a last event id (0 = none).
    public var replayCapacity = 0
    /// With the Redis engine: about how many messages the topic's stream keeps in Redis
    /// (`XADD ... MAXLEN ~`; Redis trims in whole blocks, so it may keep a little more). A client
    /// resuming from an older id takes a snapshot; a node that falls further behind than this
    /// closes its subscribers of the topic (1012) so that they resume.
    public var streamCapacity = 10_000

    public init(
        slowConsumer: SlowConsumerPolicy = .close(.policyViolation), maxQueuedMessages: Int = 1024, replayCapacity: Int = 0,
        streamCapacity: Int = 10_000
    ) {
        self.slowConsumer = slowConsumer
        self.maxQueuedMessages = maxQueuedMessages
        self.replayCapacity = replayCapacity
        self.streamCapacity = streamCapacity
    }
}

/// Limits, timers and protocol options shared by servers and clients.
public struct ConnectionOptions: Sendable {
    /// Frame and message limits, auto-pong (see PetrelCore).
    public var session = SessionConfiguration()
    /// The opening handshake must complete within this time (slowloris-proof: it counts from accept).
    public var handshakeTimeout: Milliseconds = 10_000
    /// Close a connection that received nothing for this long (0 = never).
    public var idleTimeout: Milliseconds = 0
    /// Send a ping after this much silence from the peer (0 = never); the pong must come within `pongTimeout`.
    public var pingInterval: Milliseconds = 0
    /// With `pingInterval`: each time a ping (on an event stream, a keepalive comment) goes out,
    /// also send an empty text message (an event stream: an empty `data:` event). Pings and
    /// comments never reach scripts; a browser client (petrel.js) finds a dead connection by
    /// silence, and takes an empty message for a heartbeat. Not on STOMP connections, which
    /// have heart-beats of their own. Off by default: other clients would see empty messages.
    public var heartbeatMessages = false
    public var pongTimeout: Milliseconds = 10_000
    /// After our close frame, how long to wait for the peer's, and then for the TCP close.
    public var closeTimeout: Milliseconds = 5_000
    /// Outgoing bytes a connection may have buffered; a send beyond it returns `.backpressure`.
    public var maxBackpressure = 1024 * 1024
    /// Close a connection with 1008 when a send finds its buffer over `maxBackpressure`,
    /// instead of returning `.backpressure` to the caller.
    public var closeOnBackpressure = false
    /// Largest HTTP head accepted, and the most header fields.
    public var maxHeaderBytes = 16 * 1024
    public var maxHeaderCount = 100

    public init() {}
}

/// A server's configuration. Defaults are in docs/limits.md.
public struct ServerConfiguration: Sendable {
    public var host = "0.0.0.0"
    public var port: UInt16 = 8080
    /// Loop threads, each with its own listening socket (SO_REUSEPORT). 0 = one per core.
    public var threads = 0
    public var backlog: Int32 = 1024
    /// Open connections (of every kind) beyond which a request is answered 503.
    public var maxConnections = 100_000
    public var options = ConnectionOptions()
    /// permessage-deflate, or nil to decline it. By default the server does not keep its
    /// compression context between messages (256 KiB less per connection, and pub/sub frames
    /// can be compressed once for every subscriber).
    public var compression: DeflateOptions? = DeflateOptions.serverDefault
    /// Subprotocols in order of preference; the first one the client also offers is chosen.
    public var subprotocols: [String] = []
    /// If set, only these `Origin` values may connect (403 otherwise).
    public var allowedOrigins: [String]? = nil
    /// Where topics get their event ids and keep their history: in this process (the default),
    /// or Redis Streams shared with other servers (`Engine`).
    public var engine = Engine.inProcess
    /// With the Redis engine: how long connecting to Redis, or one reply, may take.
    public var engineTimeout: Milliseconds = 2_000
    public var defaultTopicPolicy = TopicPolicy()
    public var topicPolicies: [String: TopicPolicy] = [:]
    /// How often the timers are checked. Timeouts are accurate to about this much.
    public var timerResolution: Milliseconds = 100
    /// A folder whose files are served to GET and HEAD requests that no other route took
    /// (`/` is `index.html`); nil serves none (plain requests get 426, or 404 with a root).
    public var staticRoot: String? = nil
    /// Largest static file served (bigger ones get 403).
    public var maxStaticFileSize = 8 * 1024 * 1024
    /// Paths (without query) where a GET becomes a Server-Sent Events stream: `onOpen` fires for
    /// it as for a WebSocket, and what is sent to it goes out as events.
    public var eventStreamPaths: [String] = []
    /// Largest body a plain HTTP request may carry (`Content-Length`); over it, 413.
    public var maxRequestBody = 64 * 1024
    /// HTTP/1.1 keep-alive for plain requests (routes, static files, acknowledgements): how long
    /// a connection waits for its next request once a response is out (0: close after each one).
    public var keepAliveTimeout: Milliseconds = 5_000
    /// Plain requests one connection may make; the last response says `Connection: close`.
    public var maxKeepAliveRequests = 1_000
    /// Cross-origin requests to the HTTP routes, static files and event streams (nil: no CORS
    /// header is sent, and browsers keep other origins' pages from reading the responses).
    public var cors: CORSConfiguration? = nil
    /// Every connection starts with a PROXY protocol header (version 1 or 2, as HAProxy, nginx's
    /// `proxy_protocol` and cloud load balancers send): its source address is the client's.
    /// Only for a listener that nothing but such balancers can reach: a connection without the
    /// header is closed.
    public var proxyProtocol = false
    /// Addresses and CIDR blocks (`10.0.0.0/8`, `::1`) of proxies whose `Forwarded` or
    /// `X-Forwarded-For` header is believed: a request from one of them (or whose PROXY header
    /// names one) gets the client address the header gives (`Connection.clientAddress`,
    /// the accept hook's `clientAddress`, the access log). Empty (the default): none.
    public var trustedProxies: [String] = []
    /// The header the trusted proxies write: only that one is read, since a proxy passes the
    /// other through as the client sent it (nginx and cloud balancers write `X-Forwarded-For`).
    public var forwardedHeader = ForwardedHeader.xForwardedFor
    /// An access log (nil, the default: none): a line per plain request, upgrade and close of an
    /// upgraded connection, to a file or a function (`AccessLog`). With it on, every connection
    /// counts its bytes, in about 200 bytes of extra state.
    public var accessLog: AccessLog? = nil
    /// Server-Sent Events: the `retry:` field (ms) sent when a stream opens, which browsers
    /// wait before reconnecting (0: none, the browser's default of about 3 s).
    public var eventStreamRetry: Milliseconds = 1_000
    /// Server-Sent Events: bytes of comment sent when a stream opens, for proxies that hold a
    /// response until they have a buffer's worth (0: none; 2,048 covers the common ones).
    public var eventStreamPadding = 0
    /// TLS (https and wss on this port), or nil for plain TCP.
    public var tls: TLSServerConfiguration? = nil
    /// STOMP over WebSocket (nil: off): which connections speak it, and its limits and periods.
    public var stomp: StompConfiguration? = nil

    public init(host: String = "0.0.0.0", port: UInt16 = 8080) {
        self.host = host
        self.port = port
    }

    func policy(for topic: String) -> TopicPolicy { self.topicPolicies[topic] ?? self.defaultTopicPolicy }
}

/// Which header trusted proxies write the client's address in (`ServerConfiguration.forwardedHeader`).
public enum ForwardedHeader: Sendable {
    /// `X-Forwarded-For: client, proxy1, proxy2`.
    case xForwardedFor
    /// `Forwarded: for=client, for=proxy1` (RFC 7239).
    case forwarded
}

/// Cross-origin resource sharing (the Fetch standard's CORS protocol) for plain requests and
/// event streams. A request whose `Origin` is allowed gets `Access-Control-Allow-Origin` (and
/// `-Credentials` when asked); a preflight (`OPTIONS` with `Access-Control-Request-Method`) is
/// answered 204 by the server; a request from an origin that is not allowed, nor the server's
/// own (the `Host` it was sent to), is refused with 403 before any route sees it. WebSocket
/// upgrades are checked against `ServerConfiguration.allowedOrigins` instead.
public struct CORSConfiguration: Sendable {
    /// Origins as browsers send them (`https://app.example.com`, with a port when not the
    /// scheme's default); `*` allows any (then credentials are not allowed: the standard forbids it).
    public var allowedOrigins: [String]
    /// Send `Access-Control-Allow-Credentials: true`, letting pages send cookies.
    public var allowCredentials = false
    /// Request headers a page may send (preflight answer).
    public var allowedHeaders = ["Content-Type", "Last-Event-ID"]
    /// How long browsers may cache a preflight answer, in seconds.
    public var maxAge = 600

    public init(allowedOrigins: [String], allowCredentials: Bool = false) {
        self.allowedOrigins = allowedOrigins
        self.allowCredentials = allowCredentials
    }
}

/// STOMP over WebSocket on a server (`ServerConfiguration.stomp`). A connection speaks STOMP when
/// it agreed a STOMP subprotocol (`v12.stomp`, `v11.stomp`, `v10.stomp`) or its upgrade request
/// came to one of `paths` (for clients that offer no subprotocol, stomp.py among them). Its
/// WebSocket messages then go to the STOMP session, not to `onMessage`; the `onStomp*` hooks
/// decide what it may do.
public struct StompConfiguration: Sendable {
    /// Upgrade paths (without query) where every connection speaks STOMP.
    public var paths: [String] = []
    /// Whether the STOMP subprotocols are offered (after `ServerConfiguration.subprotocols`).
    public var subprotocols = true
    /// Limits, heart-beat periods, the cap on unacknowledged messages (`StompServerOptions`).
    public var options = StompServerOptions()
    /// A client that agreed to send heart-beats is closed after this many of its periods of
    /// silence (default 3) ...
    public var heartBeatGrace = 3
    /// ... and never before this long (default 65,000 ms): browsers run the timers of a
    /// background tab as seldom as once a minute.
    public var minimumSilence: Milliseconds = 65_000

    public init(paths: [String] = []) {
        self.paths = paths
    }
}

/// A client's configuration.
public struct ClientConfiguration: Sendable {
    public var options = ConnectionOptions()
    /// TCP connect timeout.
    public var connectTimeout: Milliseconds = 10_000
    /// permessage-deflate to offer, or nil not to offer it.
    public var compression: DeflateOptions? = DeflateOptions()
    public var subprotocols: [String] = []
    public var origin: String? = nil
    public var headers: [HTTPField] = []
    /// How `wss://` checks the server.
    public var tls = TLSClientConfiguration()
    /// A proxy URL (`http://`, `https://` or `socks5://`, with optional `user:pass@`), or nil.
    public var proxy: String? = nil
    /// With no `proxy`: use the one `wss_proxy`/`ws_proxy`/`HTTPS_PROXY`/`HTTP_PROXY` name,
    /// unless `NO_PROXY` lists the host.
    public var proxyFromEnvironment = false

    public init() {}
}

/// A `ws://` or `wss://` URL.
public struct WebSocketURL: Sendable, Hashable, CustomStringConvertible {
    public var secure: Bool
    /// The host without brackets.
    public var host: String
    public var port: UInt16
    /// Path and query, starting with `/`.
    public var target: String

    /// Parses `ws://host[:port][/path][?query]`; IPv6 literals go in brackets. Default ports 80 and 443.
    public init(_ string: String) throws(RuntimeError) {
        if string.utf8.contains(where: { $0 <= 0x20 || $0 == 0x7F }) {
            throw RuntimeError(.invalidURL, "URL contains a space or control character")
        }
        let lower = string.lowercasedASCII
        let rest: Substring
        if lower.hasPrefix("ws://") {
            self.secure = false
            rest = string.dropFirst(5)
        } else if lower.hasPrefix("wss://") {
            self.secure = true
            rest = string.dropFirst(6)
        } else {
            throw RuntimeError(.invalidURL, "URL must start with ws:// or wss://: \(string)")
        }
        let slash = rest.firstIndex { $0 == "/" || $0 == "?" || $0 == "#" } ?? rest.endIndex
        var authority = rest[..<slash]
        var target = String(rest[slash...])
        if let hash = target.firstIndex(of: "#") { target = String(target[..<hash]) }  // fragments are not sent
        if target.isEmpty || target.first == "?" { target = "/" + target }
        if authority.contains("@") { throw RuntimeError(.invalidURL, "user info in a WebSocket URL is not supported: \(string)") }
        var port: UInt16 = self.secure ? 443 : 80
        if authority.first == "[" {
            guard let close = authority.firstIndex(of: "]") else { throw RuntimeError(.invalidURL, "unclosed [ in \(string)") }
            self.host = String(authority[authority.index(after: authority.startIndex)..<close])
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.first == ":", let p = UInt16(after.dropFirst()) else { throw RuntimeError(.invalidURL, "bad port in \(string)") }
                port = p
            }
        } else {
            if let colon = authority.lastIndex(of: ":") {
                guard let p = UInt16(authority[authority.index(after: colon)...]) else {
                    throw RuntimeError(.invalidURL, "bad port in \(string)")
                }
                port = p
                authority = authority[..<colon]
            }
            self.host = String(authority)
        }
        if self.host.isEmpty { throw RuntimeError(.invalidURL, "no host in \(string)") }
        self.port = port
        self.target = target
    }

    /// The `Host` header value.
    public var hostHeader: String {
        let h = self.host.contains(":") ? "[\(self.host)]" : self.host
        return self.port == (self.secure ? 443 : 80) ? h : "\(h):\(self.port)"
    }

    public var description: String { "\(self.secure ? "wss" : "ws")://\(self.hostHeader)\(self.target)" }
}

extension String {
    var lowercasedASCII: String { String(decoding: self.utf8.map(ASCII.lower), as: UTF8.self) }
}
