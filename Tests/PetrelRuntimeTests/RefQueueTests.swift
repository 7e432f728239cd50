@testable import PetrelRuntime
import Testing

/// The loop's reference list (a subscriber's queued frames, the connections to flush): order,
/// and exactly one retain per element held, released when it leaves the list or the list goes.
@Suite("RefQueue")
struct RefQueueTests {
    final class Counted {
        let value: Int
        let freed: Tally
        init(_ value: Int, _ freed: Tally) {
            self.value = value
            self.freed = freed
        }
        deinit { self.freed.count += 1 }
    }

    final class Tally: @unchecked Sendable {
        var count = 0
    }

    @Test("elements come out in order across growth, partial removal and compaction")
    func order() {
        let tally = Tally()
        var q = RefQueue<Counted>()
        var expected: [Int] = []
        var next = 0
        // Mixed appends and removals: the list grows, empties from the front, moves its live
        // elements down when the front has room, and keeps going.
        for round in 0..<50 {
            for _ in 0..<(round % 7 + 1) {
                q.append(Counted(next, tally))
                expected.append(next)
                next += 1
            }
            let remove = min(q.count, round % 5)
            q.removeFirst(remove)
            expected.removeFirst(remove)
            let count = q.count
            #expect(count == expected.count)
            for i in 0..<count {
                let value = q.with(i) { $0.value }
                #expect(value == expected[i])
            }
            #expect(tally.count == next - expected.count, "one release per element removed")
        }
        q.removeAll()
        let empty = q.isEmpty
        #expect(empty)
        #expect(tally.count == next)
    }

    @Test("the list holds its elements alive, and lets them go when it goes")
    func ownership() {
        let tally = Tally()
        do {
            var q = RefQueue<Counted>()
            for i in 0..<100 { q.append(Counted(i, tally)) }
            #expect(tally.count == 0)
            let last = q.unmanaged(99).takeUnretainedValue().value
            #expect(last == 99)
            q.removeFirst(40)
            #expect(tally.count == 40)
        }
        #expect(tally.count == 100)
    }

    @Test("emptying keeps small storage and frees large, unless told to keep it")
    func capacity() {
        let tally = Tally()
        var q = RefQueue<Counted>()
        for i in 0..<1000 { q.append(Counted(i, tally)) }
        q.removeAll(keepingCapacity: true)
        let emptied = q.isEmpty
        #expect(emptied && tally.count == 1000)
        for i in 0..<3 { q.append(Counted(i, tally)) }
        let three = q.count
        #expect(three == 3)
        q.removeAll()
        let emptyAgain = q.isEmpty
        #expect(emptyAgain && tally.count == 1003)
    }
}
