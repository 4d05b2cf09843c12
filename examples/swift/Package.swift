// swift-tools-version:5.5
// Swift bindings of metarec: the C API of include/metarec.h through a module map (CMetarec) and
// a thin Swift wrapper (Metarec), plus the personalize example.
//
// NOTE: no Swift toolchain exists on the machine this repository is developed and tested on,
// so this package is not built by the tests; it stays a thin layer over the C API, which is
// tested from C (tests/c) under sanitizers.
//
// Build (macOS or Linux, with libmetarec installed by scripts/package.sh):
//   PKG_CONFIG_PATH=$PREFIX/lib/pkgconfig swift build
//   swift run personalize MODEL.mrec USER.tsv
// For iOS, ship libmetarec as an XCFramework whose Headers/ holds metarec.h and this module map.
import PackageDescription

let package = Package(
    name: "Metarec",
    products: [
        .library(name: "Metarec", targets: ["Metarec"]),
        .executable(name: "personalize", targets: ["Personalize"]),
    ],
    targets: [
        .systemLibrary(name: "CMetarec", path: "Sources/CMetarec", pkgConfig: "metarec"),
        .target(name: "Metarec", dependencies: ["CMetarec"], path: "Sources/Metarec"),
        .executableTarget(name: "Personalize", dependencies: ["Metarec"], path: "Sources/Personalize"),
    ]
)
