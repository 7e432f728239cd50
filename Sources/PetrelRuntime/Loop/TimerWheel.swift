/// The connections a loop must look at on a coming tick, by the tick their earliest timer falls
/// due on: a hashed wheel of `size` slots, one per tick of `resolution` milliseconds.
///
/// A loop used to look at every connection on every tick (ten times a second); a connection with
/// no timer running (an open one with no idle timeout and no ping interval, the default) is now
/// never looked at, and one with a timer is looked at when it may be due, not before.
///
/// The rule that keeps this lazy and correct: a connection is *armed* for the earliest time any
/// of its timers could fire, computed from its state (`Connection.armTimer()`). What makes a
/// timer fire later (a message received, a ping sent) does not re-arm; the connection is looked
/// at when the old time comes, finds nothing due, and is armed again for the new time. What
/// makes a timer fire earlier (a deadline set, a pong awaited) arms at once; arming only ever
/// moves a connection's tick earlier. A connection is in one slot at most (`timerTick` names
/// the tick, `timerIndex` its place there, so leaving is a swap with the slot's last entry),
/// and a closed connection leaves its slot: the wheel holds no connection that is gone.
/// Times past the wheel's reach (`size - 1` ticks) are armed at its edge and re-armed from there.
/// Generic only so that a test can drive it with plain objects; the loop's entries are connections.
struct TimerWheel<Entry: TimerWheelEntry>: ~Copyable {
    static var size: Int { 256 }
    private var slots: [[Entry]]
    /// The last tick taken; every armed tick is after it and at most `size - 1` past it.
    private var lastTick: UInt64
    let resolution: UInt64

    init(resolution: Int, now: UInt64) {
        self.resolution = UInt64(max(1, resolution))
        self.lastTick = now / self.resolution
        self.slots = Array(repeating: [], count: TimerWheel.size)
    }

    /// Arms `c` for `due` (milliseconds, the loop's clock), rounded up to a tick, unless it is
    /// already armed for that tick or an earlier one.
    mutating func arm(_ c: Entry, at due: UInt64) {
        let wanted = (due + self.resolution - 1) / self.resolution
        let tick = min(max(wanted, self.lastTick + 1), self.lastTick + UInt64(TimerWheel.size - 1))
        let current = c.timerTick
        if current != 0 {
            if current <= tick { return }
            self.disarm(c)
        }
        let s = Int(tick % UInt64(TimerWheel.size))
        c.timerTick = tick
        c.timerIndex = self.slots[s].count
        self.slots[s].append(c)
    }

    /// Takes `c` out of its slot, if it is in one.
    mutating func disarm(_ c: Entry) {
        let tick = c.timerTick
        guard tick != 0 else { return }
        let s = Int(tick % UInt64(TimerWheel.size))
        let i = c.timerIndex
        let last = self.slots[s].removeLast()
        if i < self.slots[s].count {
            self.slots[s][i] = last
            last.timerIndex = i
        } else if i == 0 && self.slots[s].capacity > 64 {
            // A burst's slot emptied: give its storage back rather than hold it for a turn.
            self.slots[s] = []
        }
        c.timerTick = 0
    }

    /// Moves the connections due by `now` into `due`, disarmed, in tick order.
    mutating func expire(now: UInt64, into due: inout [Entry]) {
        let nowTick = now / self.resolution
        guard nowTick > self.lastTick else { return }
        let size = UInt64(TimerWheel.size)
        // Every armed tick is in (lastTick, lastTick + size - 1], one per slot: a slot reached
        // holds that tick's connections only. Behind by a turn or more (a stalled loop), one
        // pass over every slot takes all of them.
        let first = nowTick - self.lastTick >= size ? nowTick - size + 1 : self.lastTick + 1
        for tick in first...nowTick {
            let s = Int(tick % size)
            if self.slots[s].isEmpty { continue }
            for c in self.slots[s] {
                c.timerTick = 0
                due.append(c)
            }
            self.slots[s].removeAll(keepingCapacity: self.slots[s].count <= 64)
        }
        self.lastTick = nowTick
    }

    /// Drops every entry (a loop's last step: entries hold their connections).
    mutating func removeAll() {
        for s in self.slots.indices {
            for c in self.slots[s] { c.timerTick = 0 }
            self.slots[s] = []
        }
    }

    /// Connections armed (for tests).
    var armedCount: Int { self.slots.reduce(0) { $0 + $1.count } }
}

/// What the wheel keeps in its entries (a connection keeps them in its loop-owned state).
protocol TimerWheelEntry: AnyObject {
    /// The tick armed for, 0 when not armed.
    var timerTick: UInt64 { get set }
    /// The place in that tick's slot.
    var timerIndex: Int { get set }
}

extension Connection: TimerWheelEntry {}
