// Built with `-sanitize=fuzzer -D FUZZING` (scripts/fuzz): libFuzzer owns main() and calls
// these two. The target is `--target=NAME` (taken out of the arguments before libFuzzer reads
// them) or PIXTRACK_FUZZ_TARGET, which is set for the processes libFuzzer starts itself.
#if FUZZING
import Glibc

nonisolated(unsafe) private var runInput: FuzzTarget.Run?

@_cdecl("LLVMFuzzerInitialize")
public func fuzzerInitialize(_ argc: UnsafeMutablePointer<Int32>,
                             _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> Int32 {
    var name = getenv("PIXTRACK_FUZZ_TARGET").map { String(cString: $0) } ?? ""
    if let args = argv.pointee {
        var kept = 0
        for i in 0..<Int(argc.pointee) {
            let arg = args[i].map { String(cString: $0) } ?? ""
            if i > 0, arg.hasPrefix("--target=") {
                name = String(arg.dropFirst("--target=".count))
            } else if i > 0, arg == "--list" {
                for t in FuzzTarget.all { print("\(t.name)\t\(t.maxLength)\t\(t.summary)") }
                exit(0)
            } else {
                args[kept] = args[i]
                kept += 1
            }
        }
        args[kept] = nil
        argc.pointee = Int32(kept)
    }
    guard let target = FuzzTarget.named(name) else {
        writeStderr("pixtrack-fuzz: name a target with --target=NAME or PIXTRACK_FUZZ_TARGET (--list shows them); got '\(name)'")
        exit(2)
    }
    setenv("PIXTRACK_FUZZ_TARGET", name, 1)
    do {
        runInput = try target.setUp()
    } catch {
        writeStderr("pixtrack-fuzz: \(name): set-up failed: \(error)")
        exit(2)
    }
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    runInput!(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}
#endif
