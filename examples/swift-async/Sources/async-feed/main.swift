import AsyncFeed
import Glibc

// swift run -c release async-feed [PORT]: ws://127.0.0.1:PORT/echo and /feed. Ctrl-C stops it
// gracefully (the server's own signal handling), which ends run().
let port = CommandLine.arguments.count > 1 ? UInt16(CommandLine.arguments[1]) ?? 8090 : 8090
let feed = AsyncFeed(port: port)
try feed.server.stopOnSignals(grace: .seconds(2))
print("async-feed: ws://127.0.0.1:\(port)/echo and ws://127.0.0.1:\(port)/feed")
try await feed.run()
