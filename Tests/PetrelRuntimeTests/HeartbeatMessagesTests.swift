import Foundation
import Glibc
import PetrelCore
@testable import PetrelRuntime
import Testing

extension RuntimeTests {
    @Suite("Heartbeats scripts can see: an empty message with each ping, an empty event with each keepalive")
    struct HeartbeatMessagesTests {
        static func server(heartbeats: Bool) throws -> Server {
            try startEchoServer { c, _ in
                c.options.pingInterval = 300
                c.options.heartbeatMessages = heartbeats
                c.eventStreamPaths = ["/events"]
                c.timerResolution = 50
            }
        }

        @Test("on: a silent WebSocket client gets empty text messages, an event stream empty data: events")
        func on() throws {
            let server = try Self.server(heartbeats: true)
            defer { server.stop(grace: 100) }
            let ws = try TestClient.connect("ws://127.0.0.1:\(server.port)/")
            #expect(ws.receive(timeout: 2) == .text(""))
            let raw = try RawSocket(port: server.port)
            raw.write("GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
            let got = String(decoding: raw.read(timeout: 2) { String(decoding: $0, as: UTF8.self).contains("data:\n\n") }.bytes, as: UTF8.self)
            #expect(got.contains("\n\ndata:\n\n") && !got.contains(": keepalive"))
        }

        @Test("off (the default): pings and comments only, no message")
        func off() throws {
            let server = try Self.server(heartbeats: false)
            defer { server.stop(grace: 100) }
            #expect(ConnectionOptions().heartbeatMessages == false)
            let ws = try TestClient.connect("ws://127.0.0.1:\(server.port)/")
            #expect(ws.receive(timeout: 1) == nil)
            let raw = try RawSocket(port: server.port)
            raw.write("GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
            let got = String(decoding: raw.read(timeout: 2) { String(decoding: $0, as: UTF8.self).contains(": keepalive") }.bytes, as: UTF8.self)
            #expect(got.contains(": keepalive\n\n") && !got.contains("data:"))
        }
    }
}
