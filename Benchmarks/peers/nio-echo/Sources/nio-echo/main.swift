// SwiftNIO WebSocket server for Petrel's side-by-side benchmarks; contract in ../../../PROTOCOL.md.
//
//   nio-echo --port N [--deflate]
//
// Best configuration as NIO documents it: one event loop thread (MultiThreadedEventLoopGroup with
// one thread), the channel-handler API (no async bridging), `configureHTTPServerPipeline` with a
// `NIOWebSocketServerUpgrader`, `NIOWebSocketFrameAggregator` to reassemble fragments, writes
// batched per read burst and flushed in `channelReadComplete`.
//
// Paths: `/sub` subscribers, `/pub` publishes to every subscriber with the same opcode (nothing
// echoed to the publisher), anything else echoes. NIO has no permessage-deflate, so `--deflate`
// exits 3 (the benchmark script reports "n/a").

import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

let maxMessageSize = 16 << 20

func writeLine(_ fd: Int32, _ line: String) {
    var text = line + "\n"
    text.withUTF8 { bytes in _ = write(fd, bytes.baseAddress, bytes.count) }
}

// MARK: Arguments

var port = 9001
var deflate = false
var arguments = CommandLine.arguments.dropFirst()
while let argument = arguments.popFirst() {
    switch argument {
    case "--port":
        guard let value = arguments.popFirst(), let number = Int(value) else {
            writeLine(2, "nio-echo: --port needs a number")
            exit(2)
        }
        port = number
    case "--deflate":
        deflate = true
    default:
        writeLine(2, "usage: nio-echo --port N [--deflate]")
        exit(2)
    }
}
if deflate {
    writeLine(2, "nio-echo: SwiftNIO's NIOWebSocket has no permessage-deflate (RFC 7692) support")
    exit(3)
}

// MARK: Fan-out

/// The `/sub` connections. Owned by the single event loop and only touched from it, so no locks.
final class Hub {
    private var subscribers: [WebSocketHandler] = []
    private var needsFlush = false

    func add(_ subscriber: WebSocketHandler) {
        guard subscriber.hubIndex < 0 else { return }
        subscriber.hubIndex = self.subscribers.count
        self.subscribers.append(subscriber)
    }

    func remove(_ subscriber: WebSocketHandler) {
        let index = subscriber.hubIndex
        guard index >= 0 else { return }
        let last = self.subscribers.removeLast()
        if index < self.subscribers.count {
            self.subscribers[index] = last
            last.hubIndex = index
        }
        subscriber.hubIndex = -1
    }

    /// Queues `frame` on every subscriber; the frame's buffer is shared, not copied.
    func publish(_ frame: WebSocketFrame) {
        for subscriber in self.subscribers {
            subscriber.context?.write(WebSocketHandler.wrapOutboundOut(frame), promise: nil)
        }
        self.needsFlush = !self.subscribers.isEmpty
    }

    /// Called at the end of a publisher's read burst: one flush (one writev) per subscriber.
    func flush() {
        guard self.needsFlush else { return }
        self.needsFlush = false
        for subscriber in self.subscribers {
            subscriber.context?.flush()
        }
    }
}

// MARK: WebSocket handler

final class WebSocketHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    enum Role { case echo, subscriber, publisher }

    let role: Role
    let hub: Hub
    fileprivate var context: ChannelHandlerContext?
    fileprivate var hubIndex = -1
    private var needsFlush = false
    private var closeSent = false

    init(role: Role, hub: Hub) {
        self.role = role
        self.hub = hub
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if self.role == .subscriber { self.hub.add(self) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        if self.role == .subscriber { self.hub.remove(self) }
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        if self.role == .subscriber { self.hub.remove(self) }
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = Self.unwrapInboundIn(data)
        switch frame.opcode {
        case .text, .binary:
            // The aggregator hands over whole messages (fin == true).
            let reply = WebSocketFrame(fin: true, opcode: frame.opcode, data: frame.unmaskedData)
            switch self.role {
            case .echo:
                context.write(Self.wrapOutboundOut(reply), promise: nil)
                self.needsFlush = true
            case .publisher:
                self.hub.publish(reply)
            case .subscriber:
                break  // subscribers only listen
            }
        case .ping:
            let pong = WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData)
            context.write(Self.wrapOutboundOut(pong), promise: nil)
            self.needsFlush = true
        case .pong:
            break
        case .connectionClose:
            self.receivedClose(context: context, frame: frame)
        default:
            // Unknown opcodes are a protocol error: close with 1002.
            self.sendClose(context: context, code: .protocolError)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if self.needsFlush {
            self.needsFlush = false
            context.flush()
        }
        if self.role == .publisher { self.hub.flush() }
        context.fireChannelReadComplete()
    }

    private func receivedClose(context: ChannelHandlerContext, frame: WebSocketFrame) {
        if self.closeSent {
            // The peer answered our close: we are done.
            context.close(promise: nil)
            return
        }
        // Echo the peer's status code (RFC 6455 section 5.5.1), then close the TCP connection.
        var data = frame.unmaskedData
        let code = data.readSlice(length: 2) ?? context.channel.allocator.buffer(capacity: 0)
        self.closeSent = true
        let channel = context.channel
        context.writeAndFlush(
            Self.wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: code))
        ).whenComplete { _ in channel.close(promise: nil) }
    }

    private func sendClose(context: ChannelHandlerContext, code: WebSocketErrorCode) {
        guard !self.closeSent else { return }
        self.closeSent = true
        var data = context.channel.allocator.buffer(capacity: 2)
        data.write(webSocketErrorCode: code)
        let channel = context.channel
        context.writeAndFlush(
            Self.wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: data))
        ).whenComplete { _ in channel.close(promise: nil) }
    }
}

// MARK: Plain HTTP (no upgrade)

/// Answers a request that asked for no WebSocket upgrade with 426 and closes. Removed on upgrade.
final class NotWebSocketHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .end = Self.unwrapInboundIn(data) else { return }
        var headers = HTTPHeaders()
        headers.add(name: "Content-Length", value: "0")
        headers.add(name: "Connection", value: "close")
        headers.add(name: "Upgrade", value: "websocket")
        let head = HTTPResponseHead(version: .http1_1, status: .upgradeRequired, headers: headers)
        context.write(Self.wrapOutboundOut(.head(head)), promise: nil)
        let channel = context.channel
        context.writeAndFlush(Self.wrapOutboundOut(.end(nil))).whenComplete { _ in
            channel.close(promise: nil)
        }
    }
}

// MARK: Server

let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
let loop = group.next()
let hub = try loop.submit { NIOLoopBound(Hub(), eventLoop: loop) }.wait()

let upgrader = NIOWebSocketServerUpgrader(
    maxFrameSize: maxMessageSize,
    automaticErrorHandling: true,
    shouldUpgrade: { channel, _ in channel.eventLoop.makeSucceededFuture(HTTPHeaders()) },
    upgradePipelineHandler: { channel, head in
        let path = head.uri.prefix { $0 != "?" }
        let role: WebSocketHandler.Role =
            path == "/sub" ? .subscriber : path == "/pub" ? .publisher : .echo
        return channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandlers([
                NIOWebSocketFrameAggregator(
                    minNonFinalFragmentSize: 0,
                    maxAccumulatedFrameCount: Int.max,
                    maxAccumulatedFrameSize: maxMessageSize
                ),
                WebSocketHandler(role: role, hub: hub.value),
            ])
        }
    }
)

let bootstrap = ServerBootstrap(group: group)
    .serverChannelOption(.backlog, value: 4096)
    .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
    .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
    .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.configureHTTPServerPipeline(
                withServerUpgrade: (
                    upgraders: [upgrader],
                    completionHandler: { context in
                        context.pipeline.removeHandler(name: "not-websocket", promise: nil)
                    }
                )
            )
            try channel.pipeline.syncOperations.addHandler(NotWebSocketHandler(), name: "not-websocket")
        }
    }

let server = try bootstrap.bind(host: "127.0.0.1", port: port).wait()
writeLine(1, "nio-echo listening on 127.0.0.1:\(port)")
try server.closeFuture.wait()
