import Testing
@testable import RPC

@Suite struct GRPCWireTests {
    @Test func parsesEveryTimeoutUnit() {
        #expect(GRPCWire.parseTimeout("1H") == .seconds(3600))
        #expect(GRPCWire.parseTimeout("2M") == .seconds(120))
        #expect(GRPCWire.parseTimeout("3S") == .seconds(3))
        #expect(GRPCWire.parseTimeout("250m") == .milliseconds(250))
        #expect(GRPCWire.parseTimeout("7u") == .microseconds(7))
        #expect(GRPCWire.parseTimeout("99999999n") == .nanoseconds(99_999_999))
    }

    @Test func rejectsMalformedTimeouts() {
        for bad in ["", "S", "10", "10x", "-5S", "123456789S", "1.5S", " 5S"] {
            #expect(GRPCWire.parseTimeout(bad) == nil, "\(bad)")
        }
    }

    @Test func formatsTimeoutsWithinEightDigitsRoundingUp() {
        #expect(GRPCWire.formatTimeout(.milliseconds(300)) == "300000000n" || GRPCWire.formatTimeout(.milliseconds(300)) == "300000u")
        let t = GRPCWire.formatTimeout(.seconds(100_000))
        #expect(t.count <= 9)
        #expect(GRPCWire.parseTimeout(t)! >= .seconds(100_000))
        #expect(GRPCWire.parseTimeout(GRPCWire.formatTimeout(.nanoseconds(1_500)))! >= .nanoseconds(1_500))
    }

    @Test func percentEncodingFollowsTheSpec() {
        #expect(GRPCWire.percentEncode("plain text ok") == "plain text ok")
        #expect(GRPCWire.percentEncode("100%") == "100%25")
        #expect(GRPCWire.percentEncode("não") == "n%C3%A3o")
        #expect(GRPCWire.percentEncode("a\nb") == "a%0Ab")
        let msg = "pagamento não encontrado: 100% ✓"
        #expect(GRPCWire.percentDecode(GRPCWire.percentEncode(msg)) == msg)
        #expect(GRPCWire.percentDecode("bad%zzescape%") == "bad%zzescape%")
    }

    @Test func deframerReassemblesSplitMessages() throws {
        var d = GRPCDeframer(limit: 100)
        let framed = GRPCWire.frame([1, 2, 3]) + GRPCWire.frame([]) + GRPCWire.frame([9])
        var got: [[UInt8]] = []
        for b in framed {
            got += try [b].withUnsafeBytes { try d.append($0) }
        }
        #expect(got == [[1, 2, 3], [], [9]])
        #expect(d.pendingBytes == 0)
    }

    @Test func deframerSplitsAtEveryPointOfAChunkSequence() throws {
        // Whole messages, then one cut anywhere: what arrives whole skips the buffer, the rest
        // is buffered; the result must not depend on where the cut falls.
        let framed = GRPCWire.frame([1, 2, 3]) + GRPCWire.frame([]) + GRPCWire.frame(Array(repeating: 7, count: 40)) + GRPCWire.frame([9])
        for cut in 0...framed.count {
            var d = GRPCDeframer(limit: 100)
            var got = try Array(framed[..<cut]).withUnsafeBytes { try d.append($0) }
            got += try Array(framed[cut...]).withUnsafeBytes { try d.append($0) }
            #expect(got == [[1, 2, 3], [], Array(repeating: 7, count: 40), [9]], "cut at \(cut)")
            #expect(d.pendingBytes == 0)
        }
    }

    @Test func deframerReportsOversizeCompressedAndPartial() {
        var d = GRPCDeframer(limit: 4)
        #expect(throws: GRPCDeframer.Failure.tooLarge(announced: 5, limit: 4)) {
            _ = try GRPCWire.frame([1, 2, 3, 4, 5]).withUnsafeBytes { try d.append($0) }
        }
        var c = GRPCDeframer(limit: 4)
        #expect(throws: GRPCDeframer.Failure.compressed) {
            _ = try ([1, 0, 0, 0, 1, 7] as [UInt8]).withUnsafeBytes { try c.append($0) }
        }
        var p = GRPCDeframer(limit: 100)
        let partial = try? ([0, 0, 0, 0, 10, 1, 2] as [UInt8]).withUnsafeBytes { try p.append($0) }
        #expect(partial == [])
        #expect(p.pendingBytes == 7)
    }

    @Test func metadataIsCaseInsensitiveAndOrdered() {
        var m = Metadata([("X-Trace", "a")])
        m.add("x-trace", "b")
        #expect(m["X-TRACE"] == "a")
        #expect(m.values("x-trace") == ["a", "b"])
    }

    @Test func unknownErrorsBecomeInternalWithoutDetail() {
        struct Secret: Error { let dsn = "postgres://user:pw@db" }
        let e = RPCError(mapping: Secret())
        #expect(e.code == .internal)
        #expect(!e.message.contains("pw"))
    }
}
