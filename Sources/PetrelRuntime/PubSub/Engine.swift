/// Where a server's topics get their event ids and keep their history
/// (docs/architecture.md, "Scale: engines behind pub/sub").
public enum Engine: Sendable, Hashable, CustomStringConvertible {
    /// Ids and replay rings in this process: today's behaviour, the default, no dependencies.
    /// Ids count from 1 on every start.
    case inProcess
    /// Ids and history in Redis Streams, shared by every server that names the same Redis: a
    /// message published on any of them reaches the subscribers of all of them, with the same
    /// id, and a client can resume on any of them. See `RedisEngine`.
    case redis(RedisAddress)

    /// `""`, `inprocess` or `memory` for the in-process engine; `redis://host[:port]`,
    /// `unix:/path` or `/path` for Redis.
    public init(url: String) throws(RuntimeError) {
        switch url {
        case "", "inprocess", "in-process", "memory": self = .inProcess
        default: self = .redis(try RedisAddress(url))
        }
    }

    public var description: String {
        switch self {
        case .inProcess: return "in-process"
        case .redis(let address): return address.description
        }
    }
}
