import Dispatch
import Glibc
import Synchronization

/// One fuzz target: a name (`Fuzz/corpus/<name>/` holds its seeds), what it covers, and a
/// set-up that returns the function libFuzzer (or the replay) calls with each input.
///
/// A target asserts invariants with `require`: a violated one stops the process like a crash,
/// so libFuzzer saves the input and the replay fails.
struct FuzzTarget: Sendable {
    typealias Run = (UnsafeRawBufferPointer) -> Void

    let name: String
    let summary: String
    /// Inputs libFuzzer may grow to (`-max_len`).
    let maxLength: Int
    /// Runs once per process, before the first input (may start a server, load a plugin).
    let setUp: @Sendable () throws -> Run

    /// Every target, in the order `scripts/fuzz` runs them.
    static let all: [FuzzTarget] = http1Targets + [
        http2Target, grpcDeframerTarget, protoTarget, protoJSONTarget, jsonTarget, brCodeTarget,
    ] + webhookTargets

    static func named(_ name: String) -> FuzzTarget? { all.first { $0.name == name } }
}

/// The input being run, named in invariant failures (the replay sets it to the corpus file).
nonisolated(unsafe) var currentInputName = "<libFuzzer input>"

/// `pixtrack-fuzz replay -v` / `run`: targets say what they made of each input.
nonisolated(unsafe) var traceEnabled = false

func trace(_ message: @autoclosure () -> String) {
    if traceEnabled { print("      \(message())") }
}

/// Stops the process when an invariant does not hold. The message names the input.
func require(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String,
             file: StaticString = #fileID, line: UInt = #line) {
    guard !condition() else { return }
    fatalError("invariant violated on \(currentInputName): \(message())", file: file, line: line)
}

/// One line on stderr.
func writeStderr(_ message: String) {
    let line = Array((message + "\n").utf8)
    _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
}

/// Reads an input front to back: a few control bytes first, then the payload.
struct FuzzInput {
    private let bytes: UnsafeRawBufferPointer
    private(set) var offset = 0

    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    /// The next byte, 0 once the input is used up.
    mutating func byte() -> UInt8 {
        guard offset < bytes.count else { return 0 }
        defer { offset += 1 }
        return bytes[offset]
    }

    /// What is left.
    var rest: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: bytes[offset...]) }
    var restArray: [UInt8] { Array(rest) }
}

/// Waits for async work from a synchronous caller (libFuzzer's callback is one).
func blocking<T: Sendable>(_ work: @escaping @Sendable () async -> T) -> T {
    let box = BlockingResult<T>()
    Task {
        let v = await work()
        box.value.withLock { $0 = v }
        box.done.signal()
    }
    box.done.wait()
    return box.value.withLock { $0! }
}

private final class BlockingResult<T: Sendable>: Sendable {
    let value = Mutex<T?>(nil)
    let done = DispatchSemaphore(value: 0)
}
