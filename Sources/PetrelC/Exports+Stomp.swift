import CPetrelABI
import Glibc
import PetrelCore
import PetrelRuntime

// STOMP for on_stomp and on_stomp_ack: a frame is lent to the callback as a C struct whose
// `internal_` points to this exchange, which collects the answer.

final class CStompExchange {
    enum Answer {
        case allow(String?)
        case refuse(String)
    }

    let command: String
    let frame: StompFrame
    let destination: String
    let subscription: String
    let ack: String
    var answer: Answer?

    init(command: String, frame: StompFrame, destination: String = "", subscription: String = "", ack: String = "") {
        self.command = command
        self.frame = frame
        self.destination = destination
        self.subscription = subscription
        self.ack = ack
    }

    static func from(_ f: UnsafePointer<petrel_stomp_frame>?) -> CStompExchange? {
        guard let p = f?.pointee.internal_ else { return nil }
        return Unmanaged<CStompExchange>.fromOpaque(p).takeUnretainedValue()
    }

    /// Calls `callback` with the frame as a C struct; returns the answer it gave, if any.
    func lend(_ callback: (UnsafePointer<petrel_stomp_frame>) -> Void) -> Answer? {
        let connect = self.command == "CONNECT"
        let parts = [
            self.command, self.destination, self.subscription, self.ack,
            connect ? self.frame["login"] ?? "" : "", connect ? self.frame["passcode"] ?? "" : "", connect ? self.frame["host"] ?? "" : "",
        ]
        withCStrings(parts) { s in
            self.frame.body.withUnsafeBufferPointer { body in
                var c = petrel_stomp_frame()
                c.command = s[0]
                c.destination = s[1]
                c.subscription = s[2]
                c.ack = s[3]
                c.login = s[4]
                c.passcode = s[5]
                c.host = s[6]
                c.body = body.count > 0 ? body.baseAddress : nil
                c.body_len = body.count
                c.internal_ = Unmanaged.passUnretained(self).toOpaque()
                withUnsafePointer(to: &c) { callback($0) }
            }
        }
        return self.answer
    }
}

typealias CStompCallback = @convention(c) (UnsafeMutableRawPointer?, OpaquePointer?, UInt64, UnsafeMutableRawPointer?, UnsafePointer<petrel_stomp_frame>?) -> Void

/// Sets the runtime's STOMP hooks from on_stomp (a C function pointer and its userdata).
func installStompHooks(_ handlers: Handlers, onStomp: CStompCallback, ptrs: CPointers) {
    handlers.onStompConnect = { conn, request in
        let e = CStompExchange(command: "CONNECT", frame: request.frame)
        if case .refuse(let m) = e.lend({ onStomp(ptrs.userdata, ptrs.handle, conn.id.rawValue, conn.cData, $0) }) { return .refuse(m) }
        return .accept
    }
    handlers.onStompSubscribe = { conn, s in
        let e = CStompExchange(
            command: "SUBSCRIBE", frame: StompFrame(.subscribe, s.headers), destination: s.destination, subscription: s.id, ack: s.ackMode.rawValue)
        switch e.lend({ onStomp(ptrs.userdata, ptrs.handle, conn.id.rawValue, conn.cData, $0) }) {
        case .refuse(let m): return .refuse(m)
        case .allow(let topic): return .allow(topic: topic ?? "")
        case nil: return Connection.defaultStompRoute(s.destination)
        }
    }
    handlers.onStompSend = { conn, frame, destination in
        let e = CStompExchange(command: "SEND", frame: frame, destination: destination)
        switch e.lend({ onStomp(ptrs.userdata, ptrs.handle, conn.id.rawValue, conn.cData, $0) }) {
        case .refuse(let m): return .refuse(m)
        case .allow(let topic?): return .publish(topic: topic)
        case .allow(nil): return .handled
        case nil: return .refuse("this server takes no SEND")
        }
    }
}

@_cdecl("petrel_stomp_allow")
public func petrel_stomp_allow(_ frame: UnsafePointer<petrel_stomp_frame>?, _ topic: UnsafePointer<CChar>?) -> Int32 {
    guard let e = CStompExchange.from(frame) else { return PETREL_E_NULL }
    var t: String? = nil
    if let topic {
        guard let s = string(topic) else { return PETREL_E_INVALID_ARGUMENT }
        t = s
    }
    if e.command == "SUBSCRIBE" && t == nil { return PETREL_E_NULL }
    guard e.answer == nil else { return PETREL_E_STATE }
    e.answer = .allow(e.command == "CONNECT" ? nil : t)
    return PETREL_OK
}

@_cdecl("petrel_stomp_refuse")
public func petrel_stomp_refuse(_ frame: UnsafePointer<petrel_stomp_frame>?, _ message: UnsafePointer<CChar>?) -> Int32 {
    guard let e = CStompExchange.from(frame), let message else { return PETREL_E_NULL }
    guard let m = string(message), !m.utf8.contains(where: { $0 == 0x0A || $0 == 0x0D }) else { return PETREL_E_INVALID_ARGUMENT }
    guard e.answer == nil else { return PETREL_E_STATE }
    e.answer = .refuse(m)
    return PETREL_OK
}

@_cdecl("petrel_stomp_header")
public func petrel_stomp_header(
    _ frame: UnsafePointer<petrel_stomp_frame>?, _ name: UnsafePointer<CChar>?, _ buf: UnsafeMutablePointer<CChar>?, _ cap: Int,
    _ lenOut: UnsafeMutablePointer<Int>?
) -> Int32 {
    guard let e = CStompExchange.from(frame), let name, lenOut != nil else { return PETREL_E_NULL }
    guard let n = string(name), cap >= 0 else { return PETREL_E_INVALID_ARGUMENT }
    guard let value = e.frame[n] else { return PETREL_E_AGAIN }
    return copyOut(value, buf, cap, lenOut)
}
