/// A loop's subscribers, by topic: what a publish walks on each loop thread. Loop thread only.
///
/// Each connection remembers, per topic, its slot in that topic's list, so that unsubscribing
/// or closing takes the last subscriber into the freed slot: O(1) per topic, where removing
/// by identity was O(n) (10,000 subscribers closing at once were O(n²)). The order of
/// subscribers within a topic is not kept, and nothing depends on it.
struct LoopSubscribers {
    private var lists: [String: [Connection]] = [:]

    /// The topic's subscribers on this loop, or nil when it has none.
    subscript(_ topic: String) -> [Connection]? { self.lists[topic] }

    /// How many topics have subscribers on this loop.
    var count: Int { self.lists.count }

    /// Adds `connection` to `topic`'s list and returns its slot there.
    mutating func add(_ connection: Connection, to topic: String) -> Int {
        if let i = self.lists.index(forKey: topic) {
            self.lists.values[i].append(connection)
            return self.lists.values[i].count - 1
        }
        self.lists[topic] = [connection]
        return 0
    }

    /// Removes the subscriber in `slot` of `topic`'s list; the last subscriber takes its slot.
    mutating func remove(slot: Int, of topic: String) {
        guard let i = self.lists.index(forKey: topic) else { return }
        let last = self.lists.values[i].count - 1
        if slot < last {
            let moved = self.lists.values[i][last]
            self.lists.values[i][slot] = moved
            moved.subscriptionMoved(topic: topic, to: slot)
        }
        self.lists.values[i].removeLast()
        if last == 0 { self.lists.remove(at: i) }
    }

    mutating func removeAll() { self.lists.removeAll() }
}

/// A topic a connection subscribes to, and its slot in the loop's list of that topic's subscribers.
struct Subscription {
    let topic: String
    var slot: Int
}
