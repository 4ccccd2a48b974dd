// Built normally (no sanitizer), pixtrack-fuzz replays inputs through the targets: `make test`
// runs every committed corpus file once, and a crash found by libFuzzer reproduces here with a
// Swift backtrace. The libFuzzer entry points are in LibFuzzer.swift.
#if !FUZZING
import Foundation

@main
struct PixTrackFuzzTool {
    static let usage = """
        usage: pixtrack-fuzz list                      targets: name, max input length, what it covers
               pixtrack-fuzz types                     the type table of the proto targets (control byte, type)
               pixtrack-fuzz replay [-v] [--corpus DIR] [TARGET...]
                                                       every file of DIR/<target>/ (default Fuzz/corpus) through
                                                       its target once (all targets by default)
               pixtrack-fuzz run TARGET FILE...        the given files (e.g. a crash libFuzzer saved)
               pixtrack-fuzz seeds [--out DIR] [TARGET...]
                                                       (re)write the generated seed-* files (run from the repository root)
        Plugins are found in PIXTRACK_FUZZ_PLUGIN_PATH (directories, ':'-separated), then next to this executable.
        """

    static func main() {
        var args = Array(CommandLine.arguments.dropFirst())
        guard let command = args.first else { fail(usage) }
        args.removeFirst()
        switch command {
        case "list":
            for t in FuzzTarget.all { print("\(t.name)\t\(t.maxLength)\t\(t.summary)") }
        case "types":
            for (i, t) in ProtoTypes.all.enumerated() { print("\(i)\t\(t)") }
        case "replay":
            var corpus = "Fuzz/corpus"
            var verbose = false
            var names: [String] = []
            while let a = args.first {
                args.removeFirst()
                switch a {
                case "-v": verbose = true
                case "--corpus": corpus = flagValue(&args)
                default: names.append(a)
                }
            }
            var total = 0
            for target in targets(names) {
                let dir = "\(corpus)/\(target.name)"
                let files = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { !$0.hasPrefix(".") }.sorted()
                if files.isEmpty { fail("pixtrack-fuzz: no corpus for \(target.name) in \(dir)") }
                let started = ContinuousClock.now
                total += replay(target, files.map { "\(dir)/\($0)" }, verbose: verbose)
                print("  ok  \(target.name): \(files.count) inputs (\(milliseconds(ContinuousClock.now - started)) ms)")
            }
            print("replayed \(total) inputs, every invariant held")
        case "run":
            guard let name = args.first, let target = FuzzTarget.named(name), args.count > 1 else { fail(usage) }
            _ = replay(target, Array(args.dropFirst()), verbose: true)
            print("ok: no crash, every invariant held")
        case "seeds":
            var out = "Fuzz/corpus"
            var names: [String] = []
            while let a = args.first {
                args.removeFirst()
                if a == "--out" { out = flagValue(&args) } else { names.append(a) }
            }
            for target in targets(names) { writeSeeds(target, into: "\(out)/\(target.name)") }
        case "-h", "--help", "help":
            print(usage)
        default:
            fail(usage)
        }
    }

    static func targets(_ names: [String]) -> [FuzzTarget] {
        guard !names.isEmpty else { return FuzzTarget.all }
        return names.map { name in
            guard let t = FuzzTarget.named(name) else { fail("pixtrack-fuzz: no target '\(name)' (pixtrack-fuzz list)") }
            return t
        }
    }

    /// The value after a flag (`--corpus DIR`).
    static func flagValue(_ args: inout [String]) -> String {
        guard !args.isEmpty else { fail(usage) }
        return args.removeFirst()
    }

    /// Runs each file once; returns how many ran.
    static func replay(_ target: FuzzTarget, _ files: [String], verbose: Bool) -> Int {
        let run: FuzzTarget.Run
        do { run = try target.setUp() } catch { fail("pixtrack-fuzz: \(target.name): set-up failed: \(error)") }
        traceEnabled = verbose
        for file in files {
            guard let data = FileManager.default.contents(atPath: file) else { fail("pixtrack-fuzz: cannot read \(file)") }
            currentInputName = file
            if verbose { print("  \(target.name) < \(file)") }
            Array(data).withUnsafeBytes { run($0) }
        }
        return files.count
    }

    static func writeSeeds(_ target: FuzzTarget, into dir: String) {
        let seeds: [(name: String, bytes: [UInt8])]
        do { seeds = try Seeds.generate(target.name) } catch { fail("pixtrack-fuzz: seeds for \(target.name): \(error)") }
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let old = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasPrefix("seed-") }
            for name in old { try FileManager.default.removeItem(atPath: "\(dir)/\(name)") }
            for s in seeds { try Data(s.bytes).write(to: URL(fileURLWithPath: "\(dir)/\(s.name)")) }
        } catch {
            fail("pixtrack-fuzz: writing \(dir): \(error)")
        }
        print("  \(target.name): \(seeds.count) seeds in \(dir)")
    }

    static func milliseconds(_ d: Duration) -> Int64 { d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000 }

    static func fail(_ message: String) -> Never {
        writeStderr(message)
        exit(message == usage ? 2 : 1)
    }
}
#endif
