// Package dnstest is a DNS server for tests: it answers A queries for the
// names it is given and NXDOMAIN for every other name, on a UDP socket the
// test owns (on loopback or in a namespace it made), so no test query ever
// leaves the machine.
package dnstest

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// Serve answers queries on pc until the test ends, then closes pc. Names
// in answers are fully qualified ("web.fcvm.test.") and matched without
// regard to case.
func Serve(t testing.TB, pc net.PacketConn, answers map[string]netip.Addr) {
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if msg, ok := answer(buf[:n], answers); ok {
				pc.WriteTo(msg, from)
			}
		}
	}()
}

// answer builds the reply to query; ok is false for a datagram that is not
// a query with a question.
func answer(query []byte, answers map[string]netip.Addr) ([]byte, bool) {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return nil, false
	}
	q, err := p.Question()
	if err != nil {
		return nil, false
	}
	a, ok := answers[strings.ToLower(q.Name.String())]
	hdr := dnsmessage.Header{ID: h.ID, Response: true, RecursionAvailable: true, RecursionDesired: h.RecursionDesired}
	if !ok {
		hdr.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, hdr)
	b.EnableCompression()
	b.StartQuestions()
	b.Question(q)
	if ok && q.Type == dnsmessage.TypeA {
		b.StartAnswers()
		b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60}, dnsmessage.AResource{A: a.As4()})
	}
	msg, err := b.Finish()
	return msg, err == nil
}
