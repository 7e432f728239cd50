// swift-tools-version:6.2
// The stock-ticker push server, built as a user's package would build it: Petrel by path.
import PackageDescription

let package = Package(
    name: "StockSwift",
    platforms: [.macOS(.v15)],
    dependencies: [.package(name: "Petrel", path: "../..")],
    targets: [
        .executableTarget(name: "stock-server", dependencies: [.product(name: "Petrel", package: "Petrel")]),
        // A load generator: N WebSocket and M SSE clients that check every tick arrives, in order.
        // It drives the runtime directly (raw clients by the thousand), as a load tool would.
        .executableTarget(
            name: "stock-load",
            dependencies: [.product(name: "PetrelRuntime", package: "Petrel"), .product(name: "PetrelCore", package: "Petrel")]),
    ]
)
