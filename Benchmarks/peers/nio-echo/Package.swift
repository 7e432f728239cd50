// swift-tools-version:6.0
// SwiftNIO's WebSocket echo/fan-out server for Petrel's side-by-side benchmarks
// (contract: ../../PROTOCOL.md). A package of its own so Petrel never depends on NIO.
// Build: flock /tmp/swift-build.lock swift build -c release --package-path Benchmarks/peers/nio-echo
import PackageDescription

let package = Package(
    name: "nio-echo",
    platforms: [.macOS(.v13)],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
    ],
    targets: [
        .executableTarget(
            name: "nio-echo",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ]
        ),
    ]
)
