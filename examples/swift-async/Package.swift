// swift-tools-version:6.2
// Petrel's structured-concurrency API as a user's package uses it (Petrel by path): an async
// echo and a pub/sub feed, whose handlers are child tasks of the server's `run()`.
// Petrel runs on Linux (epoll); Swift 6 language mode, complete concurrency checking.
import PackageDescription

let package = Package(
    name: "SwiftAsync",
    dependencies: [.package(name: "Petrel", path: "../..")],
    targets: [
        .target(name: "AsyncFeed", dependencies: [.product(name: "Petrel", package: "Petrel")]),
        .executableTarget(name: "async-feed", dependencies: ["AsyncFeed"]),
        .testTarget(name: "AsyncFeedTests", dependencies: ["AsyncFeed"]),
    ]
)
