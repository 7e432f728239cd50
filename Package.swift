// swift-tools-version:6.2
import PackageDescription

let coreSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "Petrel",
    products: [
        .library(name: "PetrelCore", targets: ["PetrelCore"]),
    ],
    targets: [
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "COpenSSL", pkgConfig: "openssl", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CLinux"),
        .target(
            name: "PetrelCore",
            dependencies: ["CZlib", "COpenSSL", "CLinux"],
            swiftSettings: coreSettings
        ),
        .testTarget(
            name: "PetrelCoreTests",
            dependencies: ["PetrelCore"],
            swiftSettings: coreSettings
        ),
    ]
)
