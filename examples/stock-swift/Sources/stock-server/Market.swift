import Foundation
import Petrel

/// One listed company and its price in cents (whole cents keep the random walk exact).
struct Stock {
    let ticker: String
    let company: String
    let openCents: Int
    var cents: Int

    var json: String {
        let change = self.cents - self.openCents
        let percent = Double(change) / Double(self.openCents) * 100
        return "\"ticker\":\(jsonString(self.ticker)),\"company\":\(jsonString(self.company)),"
            + "\"price\":\(money(self.cents)),\"change\":\(money(change)),\"changePercent\":\(String(format: "%.2f", percent))"
    }
}

func money(_ cents: Int) -> String {
    let sign = cents < 0 ? "-" : ""
    let a = abs(cents)
    return "\(sign)\(a / 100).\(a % 100 < 10 ? "0" : "")\(a % 100)"
}

func jsonString(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case _ where u.value < 0x20: out += String(format: "\\u%04x", u.value)
        default: out.unicodeScalars.append(u)
        }
    }
    return out + "\""
}

func nowMilliseconds() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

/// Reads `ticker,company,price` lines (with a header line).
func loadStocks(_ path: String) throws -> [Stock] {
    let text = try String(contentsOfFile: path, encoding: .utf8)
    var stocks: [Stock] = []
    for (n, line) in text.split(whereSeparator: \.isNewline).enumerated() where n > 0 {
        let fields = line.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        guard fields.count == 3, !fields[0].isEmpty, let price = Double(fields[2]), price > 0 else {
            throw StockError("\(path):\(n + 1): expected ticker,company,price")
        }
        stocks.append(Stock(ticker: fields[0], company: fields[1], openCents: Int((price * 100).rounded()), cents: Int((price * 100).rounded())))
    }
    guard !stocks.isEmpty else { throw StockError("\(path): no stocks") }
    return stocks
}

struct StockError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { self.description = d }
}

/// The feed: its own prices, moved by a random walk, published as ticks. Only the node that runs
/// the feed has one (`--no-feed` nodes serve the ticks another node publishes).
final class Feed: @unchecked Sendable {
    private var stocks: [Stock]
    private var generator = SystemRandomNumberGenerator()
    private let server: WebSocketServer

    init(stocks: [Stock], server: WebSocketServer) {
        self.stocks = stocks
        self.server = server
    }

    /// Moves one random stock by a small random walk (at most ±0.5%, at least a cent) and
    /// publishes the tick. Its id is the engine's to give: `{{id}}` is where it goes.
    /// Called from one thread only. Throws when the engine refuses (Redis unreachable).
    func tick() throws(PetrelError) {
        let i = Int.random(in: 0..<self.stocks.count, using: &self.generator)
        var s = self.stocks[i]
        let step = max(1, Int((Double(s.cents) * Double.random(in: 0...0.005, using: &self.generator)).rounded()))
        s.cents = max(1, s.cents + (Bool.random(using: &self.generator) ? step : -step))
        let json = "{\"type\":\"tick\",\"id\":{{id}},\(s.json),\"time\":\(nowMilliseconds())}"
        try self.server.publish(.text(json), to: Market.topic, key: s.ticker, stampingID: true)
        self.stocks[i] = s
    }
}

/// The market as every node sees it: prices from the ticks of the "ticks" topic (observed, in
/// order, whoever published them), snapshots for new clients, and the acknowledgements that
/// tell how far behind each client is.
///
/// One lock orders a tick's arrival (its price, its id) and a new client's snapshot and
/// subscription: so a client sees each tick exactly once after its snapshot.
final class Market: @unchecked Sendable {
    static let topic = "ticks"
    private let lock = NSLock()
    private var stocks: [Stock]
    private var index: [String: Int] = [:]
    private var lastID: UInt64 = 0
    private var published: UInt64 = 0
    /// Publish time (ms) of recent event ids, for lag in milliseconds.
    private var times = [Int64](repeating: 0, count: 4096)

    /// Acknowledgements per client: the last event id it showed.
    struct Client {
        let transport: String
        var acked: UInt64
    }
    private var clients: [UInt64: Client] = [:]
    /// SSE clients by the page's client id (POST /ack names it).
    private var streamsByClientID: [String: UInt64] = [:]

    init(stocks: [Stock]) {
        self.stocks = stocks
        for (i, s) in stocks.enumerated() { self.index[s.ticker] = i }
    }

    /// The prices as this server has seen them (the feed starts from them: a feed restarted
    /// in a cluster goes on from where the topic is).
    func current() -> [Stock] {
        self.lock.lock()
        defer { self.lock.unlock() }
        return self.stocks
    }

    /// A tick of the topic (the observer's call): its ticker is its key; its price and time
    /// are read from it.
    func observe(eventID: UInt64, key: String?, message: WebSocketMessage) {
        guard case .text(let text) = message, let key, let price = jsonNumber(text, "price"), let time = jsonNumber(text, "time") else { return }
        self.lock.lock()
        defer { self.lock.unlock() }
        if let i = self.index[key] { self.stocks[i].cents = Int((price * 100).rounded()) }
        self.lastID = eventID
        self.published += 1
        self.times[Int(eventID % 4096)] = Int64(time)
    }

    /// A new WebSocket or SSE client: replay what it missed, or a snapshot, then live ticks.
    func join(_ conn: WebSocketConnection) {
        self.lock.lock()
        defer { self.lock.unlock() }
        var from = self.lastID
        if let last = conn.lastEventID, conn.subscribe(to: Self.topic, after: last) {
            from = last
        } else {
            let list = self.stocks.map { "{\($0.json)}" }.joined(separator: ",")
            let snapshot = "{\"type\":\"snapshot\",\"id\":\(self.lastID),\"time\":\(nowMilliseconds()),\"stocks\":[\(list)]}"
            try? conn.send(snapshot, eventID: self.lastID)
            guard conn.subscribe(to: Self.topic, after: self.lastID) else {
                // The topic's history moved on (Redis lost it) before this node saw a tick of
                // the new one: the client comes back in a moment for a newer snapshot.
                conn.close(code: .tryAgainLater, reason: "no snapshot yet: try again")
                return
            }
        }
        let id = conn.id.rawValue
        self.clients[id] = Client(transport: conn.isEventStream ? "sse" : "websocket", acked: from)
        if conn.isEventStream, let clientID = conn.queryParameter("client") { self.streamsByClientID[clientID] = id }
    }

    /// A STOMP client: its SUBSCRIBE does the subscribing (resuming after `last-event-id` if it
    /// sends one); it is counted from here, and its ACKs tell how far it is.
    func joinStomp(_ conn: WebSocketConnection) {
        self.lock.lock()
        defer { self.lock.unlock() }
        self.clients[conn.id.rawValue] = Client(transport: "stomp", acked: self.lastID)
    }

    /// A STOMP ACK: everything up to `position` is acknowledged.
    func acknowledge(_ conn: WebSocketConnection, position: UInt64) {
        self.lock.lock()
        defer { self.lock.unlock() }
        if var c = self.clients[conn.id.rawValue], position > c.acked, position <= self.lastID {
            c.acked = position
            self.clients[conn.id.rawValue] = c
        }
    }

    /// `GET /snapshot`: every price and the id of the last tick in them, for a client (STOMP)
    /// that then subscribes with `last-event-id` set to that id.
    func snapshot() -> String {
        self.lock.lock()
        defer { self.lock.unlock() }
        let list = self.stocks.map { "{\($0.json)}" }.joined(separator: ",")
        return "{\"type\":\"snapshot\",\"id\":\(self.lastID),\"time\":\(nowMilliseconds()),\"stocks\":[\(list)]}"
    }

    func leave(_ conn: WebSocketConnection) {
        self.lock.lock()
        defer { self.lock.unlock() }
        self.clients.removeValue(forKey: conn.id.rawValue)
        if conn.isEventStream, let clientID = conn.queryParameter("client"), self.streamsByClientID[clientID] == conn.id.rawValue {
            self.streamsByClientID.removeValue(forKey: clientID)
        }
    }

    /// A WebSocket message: `{"ack":N}`.
    func acknowledge(_ conn: WebSocketConnection, text: String) {
        guard let n = parseAck(text) else { return }
        self.lock.lock()
        defer { self.lock.unlock() }
        if var c = self.clients[conn.id.rawValue], n > c.acked, n <= self.lastID {
            c.acked = n
            self.clients[conn.id.rawValue] = c
        }
    }

    /// POST /ack?client=ID with the id as body. Returns whether the client is known.
    func acknowledge(clientID: String, body: String) -> Bool {
        guard let n = UInt64(body.trimmingCharacters(in: .whitespacesAndNewlines)) else { return false }
        self.lock.lock()
        defer { self.lock.unlock() }
        guard let id = self.streamsByClientID[clientID], var c = self.clients[id] else { return false }
        if n > c.acked && n <= self.lastID {
            c.acked = n
            self.clients[id] = c
        }
        return true
    }

    /// The `/health` document.
    func health(uptime: Double, connections: Int) -> String {
        self.lock.lock()
        defer { self.lock.unlock() }
        let now = nowMilliseconds()
        var parts: [String] = []
        var counts: [String] = []
        for transport in ["websocket", "sse", "stomp"] {
            let mine = self.clients.values.filter { $0.transport == transport }
            counts.append("\"\(transport)\":\(mine.count)")
            let slowest = mine.map(\.acked).min() ?? self.lastID
            // A client may have come from a server that had read further than this one.
            let behind = slowest < self.lastID ? self.lastID - slowest : 0
            // How long ago the first tick the slowest client has not shown was published.
            let ms = behind == 0 ? 0 : (behind < 4096 ? max(0, now - self.times[Int((slowest + 1) % 4096)]) : -1)
            parts.append("\"\(transport)\":{\"events\":\(behind),\"ms\":\(ms)}")
        }
        return "{\"status\":\"ok\",\"uptimeSeconds\":\(String(format: "%.1f", uptime)),"
            + "\"connections\":{\(counts.joined(separator: ",")),\"sockets\":\(connections)},"
            + "\"published\":\(self.published),\"lastEventId\":\(self.lastID),\"stocks\":\(self.stocks.count),"
            + "\"lag\":{\(parts.joined(separator: ","))}}"
    }
}

/// The number after `"name":` in a flat JSON object (the ticks this server publishes).
func jsonNumber(_ text: String, _ name: String) -> Double? {
    guard let r = text.range(of: "\"\(name)\":") else { return nil }
    return Double(text[r.upperBound...].prefix { $0 == "-" || $0 == "." || $0.isNumber })
}

/// `{"ack": 123}` (whitespace allowed) → 123.
func parseAck(_ text: String) -> UInt64? {
    let compact = text.filter { !$0.isWhitespace }
    guard compact.hasPrefix("{\"ack\":"), compact.hasSuffix("}") else { return nil }
    return UInt64(compact.dropFirst(7).dropLast())
}
