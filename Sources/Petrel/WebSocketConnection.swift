import PetrelCore
import PetrelRuntime

/// One side of a WebSocket connection in a server's handlers. Safe to use from any thread or task.
public struct WebSocketConnection: Sendable, Hashable {
    /// The runtime connection behind this one.
    let connection: Connection

    public typealias ID = ConnectionID
    /// The upgrade request, as parsed by the opening handshake.
    public typealias Request = HandshakeRequest

    public var id: ID { self.connection.id }
    /// The upgrade request: path, query and headers (for routing and authentication).
    public var request: Request? { self.connection.request }
    public var subprotocol: String? { self.connection.subprotocol }
    /// True for a Server-Sent Events stream (an event-stream path), false for a WebSocket.
    public var isEventStream: Bool { self.connection.isEventStream }
    /// True for a connection that speaks STOMP (`Configuration.stomp`): topics reach it as
    /// MESSAGE frames of its subscriptions, and its frames go to the `onStomp*` hooks.
    public var isStomp: Bool { self.connection.isStomp }
    /// The request path (WebSocket upgrade or event stream), without the query.
    public var path: String { self.connection.request?.head.path ?? self.connection.httpRequest?.path ?? "" }
    /// A decoded query parameter of the request.
    public func queryParameter(_ name: String) -> String? {
        (self.connection.request?.head ?? self.connection.httpRequest)?.queryParameter(name)
    }
    /// The event id a reconnecting client saw last (`Last-Event-ID`, or `?last_event_id=`).
    public var lastEventID: UInt64? { self.connection.lastEventID }

    /// Queues a message; throws `.backpressure` when the outgoing buffer is over its limit, or
    /// `.closed`.
    public func send(_ message: WebSocketMessage) throws(WebSocketError) {
        let status: SendStatus
        switch message {
        case .text(let s): status = self.connection.send(text: s)
        case .binary(let b): status = self.connection.send(binary: b)
        }
        try status.check()
    }

    /// Sends text that carries an event id: on an event stream it is the event's `id:`; on a
    /// WebSocket it is only sent as text.
    public func send(_ text: String, eventID: UInt64) throws(WebSocketError) {
        try self.connection.send(text: text, eventID: eventID).check()
    }

    /// Bytes queued but not yet written to the socket.
    public var bufferedAmount: Int { self.connection.bufferedAmount }
    /// The last measured ping round trip in milliseconds, or nil before the first pong.
    public var roundTripTime: Int? { self.connection.roundTripTime }
    /// Whether permessage-deflate was negotiated.
    public var isCompressing: Bool { self.connection.isCompressing }
    /// Topic messages dropped, and coalesced away, because this subscriber was slow.
    public var droppedMessages: Int { self.connection.droppedMessages }
    public var coalescedMessages: Int { self.connection.coalescedMessages }

    /// Sends a ping (its pong updates `roundTripTime`).
    public func ping(_ payload: [UInt8] = []) { self.connection.ping(payload) }

    /// Stops reading from this peer until `resumeReading()`: flow control for a consumer that
    /// has fallen behind (TCP slows the peer down). Messages already read still arrive; closing
    /// ends the pause; while paused, the peer's pings go unanswered and the idle and pong
    /// timers run on (see `Connection.holdReading`).
    public func pauseReading() { self.connection.holdReading(true) }
    public func resumeReading() { self.connection.holdReading(false) }

    public func close(code: WebSocketCloseCode = .normalClosure, reason: String = "") {
        self.connection.close(code: code, reason: reason)
    }

    public func subscribe(to topic: String) { self.connection.subscribe(topic) }

    /// Subscribes so that every message after `eventID` arrives once, in order (replayed from
    /// the topic's ring, then live); false when the ring no longer has them (send a snapshot).
    @discardableResult
    public func subscribe(to topic: String, after eventID: UInt64) -> Bool { self.connection.subscribe(topic, after: eventID) }
    public func unsubscribe(from topic: String) { self.connection.unsubscribe(topic) }

    public static func == (a: Self, b: Self) -> Bool { a.connection === b.connection }
    public func hash(into h: inout Hasher) { h.combine(self.connection.id) }
}

extension SendStatus {
    func check() throws(WebSocketError) {
        switch self {
        case .ok: return
        case .backpressure: throw .backpressure
        case .closed: throw .closed
        }
    }
}
