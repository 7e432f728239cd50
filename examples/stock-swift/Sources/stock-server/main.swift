// The stock-ticker push server: the page from examples/web, live ticks over WebSocket (/stream)
// and Server-Sent Events (/events), acknowledgements, and /health. See examples/README.md.
import Foundation
import Petrel

let examples = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../..").standardized.path
let usage = """
    usage: stock-server [--host H] [--port P] [--data FILE] [--web DIR] [--tick-min S] [--tick-max S] [--threads N]
                        [--engine URL] [--no-feed] [--tls-cert PEM --tls-key PEM] [--access-log FILE]
                        [--cors-origins LIST] [--trusted-proxies LIST]
      --host      address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)
      --port      port (default 8080; 0 picks one)
      --data      ticker,company,price CSV (default examples/data/stocks.csv)
      --web       folder served as the page (default examples/web)
      --tick-min  shortest time between ticks in seconds (default 0.05)
      --tick-max  longest time between ticks in seconds (default 2)
      --threads   loop threads (default: one per core)
      --tls-cert, --tls-key   PEM certificate chain and key: serve https:// and wss://
      --engine    topics through Redis Streams (redis://host:port, or a Unix socket path), shared
                  with every server on that Redis (default: in this process)
      --no-feed   publish nothing: serve the ticks another server on the engine publishes
      --access-log  append a line per request, upgrade and close to FILE
      --cors-origins  comma-separated origins ("*" for any) whose pages may read /events, /snapshot
                  and /health and POST /ack (others get 403)
      --trusted-proxies  comma-separated addresses and CIDR blocks whose X-Forwarded-For names
                  the client (in the access log and /health's view)
    """

var host = "127.0.0.1"
var port: UInt16 = 8080
var dataFile = examples + "/data/stocks.csv"
var webRoot = examples + "/web"
var tickMin = 0.05
var tickMax = 2.0
var threads = 0
var tlsCert: String?
var tlsKey: String?
var engine = WebSocketServer.Engine.inProcess
var feedOn = true
var accessLog: String?
var corsOrigins: [String]?
var trustedProxies: [String] = []
var args = CommandLine.arguments.dropFirst()
func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("stock-server: \(message)\n\(usage)\n".utf8))
    exit(2)
}
func number<T: LosslessStringConvertible>(_ value: String, _ flag: String) -> T {
    guard let n = T(value) else { fail("bad \(flag) \(value)") }
    return n
}
while let flag = args.popFirst() {
    if flag == "-h" || flag == "--help" {
        print(usage)
        exit(0)
    }
    if flag == "--no-feed" {
        feedOn = false
        continue
    }
    guard let value = args.popFirst() else { fail("\(flag) needs a value") }
    switch flag {
    case "--host": host = value
    case "--port": port = number(value, flag)
    case "--data": dataFile = value
    case "--web": webRoot = value
    case "--tick-min": tickMin = number(value, flag)
    case "--tick-max": tickMax = number(value, flag)
    case "--threads": threads = number(value, flag)
    case "--tls-cert": tlsCert = value
    case "--tls-key": tlsKey = value
    case "--engine":
        do { engine = try WebSocketServer.Engine(url: value) } catch { fail("\(error)") }
    case "--access-log": accessLog = value
    case "--cors-origins": corsOrigins = value.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }
    case "--trusted-proxies": trustedProxies = value.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }
    default: fail("unknown option \(flag)")
    }
}
guard tickMin > 0, tickMax >= tickMin else { fail("need 0 < --tick-min <= --tick-max") }
guard (tlsCert == nil) == (tlsKey == nil) else { fail("--tls-cert and --tls-key go together") }

let stocks: [Stock]
do { stocks = try loadStocks(dataFile) } catch { fail("\(error)") }

var configuration = WebSocketServer.Configuration(host: host, port: port)
configuration.threads = threads
configuration.staticRoot = webRoot
configuration.eventStreamPaths = ["/events"]
configuration.engine = engine
if let tlsCert, let tlsKey { configuration.tls = WebSocketServer.TLSConfiguration(certificateChainFile: tlsCert, privateKeyFile: tlsKey) }
configuration.options.pingInterval = 15_000  // WebSocket pings and SSE keepalive comments
if let accessLog { configuration.accessLog = .file(accessLog) }
if let corsOrigins { configuration.cors = WebSocketServer.CORSConfiguration(allowedOrigins: corsOrigins) }
configuration.trustedProxies = trustedProxies
// STOMP at /stomp (stomp.py offers no subprotocol), and on /stream for clients that offer
// v12.stomp, v11.stomp or v10.stomp (stomp.js does): destination /topic/stock.
configuration.stomp = WebSocketServer.StompConfiguration(paths: ["/stomp"])
// A client that falls behind keeps only the newest tick per stock; 4,096 recent ticks are kept
// for clients that reconnect.
configuration.topicPolicies[Market.topic] = WebSocketServer.TopicPolicy(slowConsumer: .coalesceByKey, maxQueuedMessages: 4096, replayCapacity: 4096)

let market = Market(stocks: stocks)
let server = WebSocketServer(
    configuration: configuration,
    onOpen: { conn in conn.isStomp ? market.joinStomp(conn) : market.join(conn) },
    onMessage: { conn, message in
        if case .text(let t) = message { market.acknowledge(conn, text: t) }
    },
    onClose: { conn, _, _ in market.leave(conn) })
// The market's prices come from the topic itself, whoever publishes: with an engine, the
// history read at start, then every tick.
do { try server.observe(topic: Market.topic) { id, key, message in market.observe(eventID: id, key: key, message: message) } } catch {
    fail("\(error)")
}
let started = Date()

server.onStompSubscribe { _, subscription in
    subscription.destination == "/topic/stock"
        ? .allow(topic: Market.topic) : .refuse("unknown destination \(subscription.destination): this server has /topic/stock")
}
server.onStompAck { conn, ack in market.acknowledge(conn, position: ack.position) }

// Only /stream and /stomp upgrade; other paths get 404.
server.handlers.onUpgrade = { request in
    ["/stream", "/stomp"].contains(request.request.path)
        ? .accept() : .reject(status: 404, body: "WebSocket endpoints are /stream and /stomp")
}
server.onHTTPRequest { request in
    switch (request.method, request.path) {
    case ("GET", "/snapshot"):
        return .response(status: 200, contentType: "application/json", body: Array(market.snapshot().utf8))
    case ("GET", "/health"):
        let body = market.health(uptime: Date().timeIntervalSince(started), connections: server.connectionCount)
        return .response(status: 200, contentType: "application/json", body: Array(body.utf8))
    case ("POST", "/ack"):
        let known = market.acknowledge(clientID: request.queryParameter("client") ?? "", body: String(decoding: request.body, as: UTF8.self))
        return .response(status: known ? 204 : 404, contentType: "text/plain", body: [])
    default:
        return nil  // /events, then the page's files
    }
}

do {
    try server.stopOnSignals(grace: .seconds(1))
    try server.start()
} catch {
    fail("\(error)")
}
let shown = host == "0.0.0.0" || host == "::" ? "localhost" : (host.contains(":") ? "[\(host)]" : host)
print("Petrel stock ticker: \(stocks.count) stocks, " + (feedOn ? "a tick every \(tickMin)-\(tickMax) s" : "no feed (ticks from the engine)")
    + (engine == .inProcess ? "" : ", topics through \(engine)"))
print("open \(tlsCert == nil ? "http" : "https")://\(shown):\(server.port)/   (WebSocket /stream, STOMP /stomp, SSE /events, /health)")
fflush(nil)

// The feed: one tick at a random interval, on its own thread.
let interval = tickMin...tickMax
let feed = Feed(stocks: market.current(), server: server)
let feedThread = Thread {
    var next = Date()
    var failing = false
    while server.isRunning {
        do {
            try feed.tick()
            if failing { print("stock-server: publishing again") }
            failing = false
        } catch {
            if !failing && server.isRunning { print("stock-server: a tick was not published: \(error)") }
            failing = true
        }
        fflush(nil)
        next += Double.random(in: interval)
        let wait = next.timeIntervalSinceNow
        if wait > 0 { Thread.sleep(forTimeInterval: wait) } else if wait < -1 { next = Date() }
    }
}
if feedOn { feedThread.start() }
while server.isRunning { Thread.sleep(forTimeInterval: 0.2) }
print("stopped")
