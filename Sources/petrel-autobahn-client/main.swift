// petrel-autobahn-client URL [AGENT]: drives the Autobahn fuzzing server the way its reference
// client does: fetch /getCaseCount, run each /runCase?case=N&agent=AGENT as an echo client,
// then /updateReports?agent=AGENT.
import Dispatch
import Glibc
import PetrelCore
import PetrelRuntime

let arguments = CommandLine.arguments
guard arguments.count >= 2 else {
    print("usage: petrel-autobahn-client ws://127.0.0.1:9001 [agent]")
    exit(2)
}
let base = arguments[1].hasSuffix("/") ? String(arguments[1].dropLast()) : arguments[1]
let agent = arguments.count > 2 ? arguments[2] : "petrel"

let configuration: ClientConfiguration = {
    var c = ClientConfiguration()
    c.options.session.maxMessageSize = 64 * 1024 * 1024
    c.options.session.maxFrameSize = 64 * 1024 * 1024
    c.options.maxBackpressure = 256 * 1024 * 1024
    c.compression?.minimumSize = 0  // compress every echo, however short
    return c
}()

/// Connects, echoes until the connection ends, and returns the first text message received.
func session(_ path: String, echo: Bool) -> String? {
    let done = DispatchSemaphore(value: 0)
    final class State: @unchecked Sendable { var first: String? }
    let state = State()
    let handlers = Handlers()
    handlers.onMessage = { c, kind, payload in
        if state.first == nil && kind == .text { state.first = String(decoding: payload, as: UTF8.self) }
        if echo { c.send(kind, payload) }
    }
    handlers.onClose = { _, _, _ in done.signal() }
    handlers.onConnectFailed = { _, error in
        print("connect \(path) failed: \(error)")
        done.signal()
    }
    do {
        _ = try ClientConnector.connect(to: base + path, configuration: configuration, handlers: handlers)
    } catch {
        print("connect \(path) failed: \(error)")
        return nil
    }
    done.wait()
    return state.first
}

guard let countText = session("/getCaseCount", echo: false), let count = Int(countText) else {
    print("could not read the case count")
    exit(1)
}
print("running \(count) cases")
for n in 1...count {
    _ = session("/runCase?case=\(n)&agent=\(agent)", echo: true)
    if n % 50 == 0 { print("  \(n)/\(count)") }
}
_ = session("/updateReports?agent=\(agent)", echo: false)
print("done")
