import Foundation
import Testing
import RPC

@Suite struct MetricsTests {
    @Test func counterHandlesAndFamiliesShareTheirSeriesWithIncrement() {
        let metrics = Metrics()
        let results = CounterFamily(metrics, "clicks_total", help: "Clicks.", label: "result", values: ["ok", "bad"])
        #expect(metrics.counter("clicks_total", help: "Clicks.", labels: [("result", "ok")])
            === metrics.counter("clicks_total", help: "Clicks.", labels: [("result", "ok")]), "one handle per series")
        // Four threads count at once through the family; none may be lost without a lock.
        let done = DispatchGroup()
        for _ in 0..<4 {
            done.enter()
            Thread.detachNewThread {
                for i in 0..<10_000 { results.increment(i % 5 == 0 ? "bad" : "ok") }
                done.leave()
            }
        }
        done.wait()
        metrics.increment("clicks_total", help: "Clicks.", labels: [("result", "ok")], by: 2)  // the same series
        results.increment("unlisted")  // a value not declared up front still counts
        let text = metrics.render()
        #expect(text.contains(#"clicks_total{result="ok"} 32002"#))
        #expect(text.contains(#"clicks_total{result="bad"} 8000"#))
        #expect(text.contains(#"clicks_total{result="unlisted"} 1"#))
        #expect(text.components(separatedBy: "# TYPE clicks_total counter").count == 2, "one family header")
    }

    @Test func callSeriesCountEveryCallFromManyThreads() async throws {
        let metrics = Metrics()
        let grpc = metrics.calls(method: "/a.S/M", transport: "grpc")
        #expect(metrics.calls(method: "/a.S/M", transport: "grpc") === grpc, "one series per method and transport")
        // Four threads record at once, each 20,000 calls: 15,000 OK at 0.3 ms and 5,000
        // UNAVAILABLE at 2 s; nothing may be lost without a lock.
        let done = DispatchGroup()
        for _ in 0..<4 {
            done.enter()
            Thread.detachNewThread {
                for i in 0..<20_000 { grpc.record(i % 4 == 0 ? .unavailable : .ok, seconds: i % 4 == 0 ? 2 : 0.0003) }
                done.leave()
            }
        }
        done.wait()
        metrics.recordCall(method: "/a.S/M", code: .ok, seconds: 30, transport: "connect")  // past every bound
        let text = metrics.render()
        #expect(text.contains(#"pixtrack_rpc_calls_total{method="/a.S/M",code="OK",transport="grpc"} 60000"#))
        #expect(text.contains(#"pixtrack_rpc_calls_total{method="/a.S/M",code="UNAVAILABLE",transport="grpc"} 20000"#))
        #expect(text.contains(#"pixtrack_rpc_calls_total{method="/a.S/M",code="OK",transport="connect"} 1"#))
        // One histogram per method, transports together, cumulative buckets.
        #expect(text.contains(#"pixtrack_rpc_duration_seconds_bucket{method="/a.S/M",le="0.0005"} 60000"#))
        #expect(text.contains(#"pixtrack_rpc_duration_seconds_bucket{method="/a.S/M",le="1"} 60000"#))
        #expect(text.contains(#"pixtrack_rpc_duration_seconds_bucket{method="/a.S/M",le="2.5"} 80000"#))
        #expect(text.contains(#"pixtrack_rpc_duration_seconds_bucket{method="/a.S/M",le="10"} 80000"#))
        #expect(text.contains(#"pixtrack_rpc_duration_seconds_bucket{method="/a.S/M",le="+Inf"} 80001"#))
        #expect(text.contains(#"pixtrack_rpc_duration_seconds_count{method="/a.S/M"} 80001"#))
        #expect(text.contains(#"pixtrack_rpc_duration_seconds_sum{method="/a.S/M"} 40048"#))  // 60000*0.0003 + 20000*2 + 30
        // A series nobody called renders nothing.
        _ = metrics.calls(method: "/a.S/Idle", transport: "grpc")
        #expect(!metrics.render().contains("/a.S/Idle"))
    }
}
