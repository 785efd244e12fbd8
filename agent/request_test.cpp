// The agent's request parser, on the requests hostile and ordinary clients send.
#include "request.hpp"

#include <gtest/gtest.h>

#include <string>
#include <string_view>

namespace gpe::agent {
namespace {

constexpr size_t kHead = 8192;
constexpr size_t kBody = 1024;

Parsed parse(std::string_view in, Request& request) {
    return parse_request(in, kHead, kBody, request);
}

int refusal(std::string_view in) {
    Request request;
    const Parsed parsed = parse(in, request);
    return parsed.kind == Parsed::kError ? parsed.status : 0;
}

TEST(RequestParser, ReadsTheHeadersItUses) {
    const std::string in =
        "GET /metrics?x=1 HTTP/1.1\r\nHost: h\r\naccept: text/plain\r\n"
        "Accept-Encoding:  gzip \r\nConnection: close\r\n\r\n";
    Request request;
    const Parsed parsed = parse(in, request);
    ASSERT_EQ(parsed.kind, Parsed::kRequest);
    EXPECT_EQ(parsed.length, in.size());
    EXPECT_EQ(request.method, "GET");
    EXPECT_EQ(request.path, "/metrics");
    EXPECT_EQ(request.accept, "text/plain");
    EXPECT_EQ(request.accept_encoding, "gzip");
    EXPECT_FALSE(request.keep_alive);
}

TEST(RequestParser, PipelinedRequestsOneAtATime) {
    const std::string first = "GET /a HTTP/1.1\r\n\r\n";
    const std::string in = first + "GET /b HTTP/1.0\r\n\r\n";
    Request request;
    Parsed parsed = parse(in, request);
    ASSERT_EQ(parsed.kind, Parsed::kRequest);
    EXPECT_EQ(parsed.length, first.size());
    EXPECT_EQ(request.path, "/a");
    EXPECT_TRUE(request.keep_alive);
    parsed = parse(std::string_view(in).substr(parsed.length), request);
    ASSERT_EQ(parsed.kind, Parsed::kRequest);
    EXPECT_EQ(request.path, "/b");
    EXPECT_FALSE(request.keep_alive);  // HTTP/1.0 without keep-alive
}

TEST(RequestParser, WaitsForTheHeadAndTheBody) {
    Request request;
    EXPECT_EQ(parse("GET /metrics HTTP/1.1\r\nHost:", request).kind, Parsed::kIncomplete);
    EXPECT_EQ(parse("POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nab", request).kind,
              Parsed::kIncomplete);
    const Parsed whole = parse("POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", request);
    EXPECT_EQ(whole.kind, Parsed::kRequest);
}

TEST(RequestParser, TheAbsoluteFormNamesThePath) {
    Request request;
    ASSERT_EQ(parse("GET HTTP://host:9091/metrics HTTP/1.1\r\n\r\n", request).kind,
              Parsed::kRequest);
    EXPECT_EQ(request.path, "/metrics");
}

TEST(RequestParser, RefusesWhatItCannotServe) {
    EXPECT_EQ(refusal("GET /metrics\r\n\r\n"), 400);            // no version
    EXPECT_EQ(refusal("GET  /metrics HTTP/1.1\r\n\r\n"), 400);  // two spaces
    EXPECT_EQ(refusal("G(T /metrics HTTP/1.1\r\n\r\n"), 400);   // not a token
    EXPECT_EQ(refusal("GET metrics HTTP/1.1\r\n\r\n"), 400);    // not a path
    EXPECT_EQ(refusal("GET / HTTP/2.0\r\n\r\n"), 505);
    EXPECT_EQ(refusal("GET / HTTP/1.1\r\nHost : x\r\n\r\n"), 400);  // space before ':'
    EXPECT_EQ(refusal("GET / HTTP/1.1\r\n folded\r\n\r\n"), 400);   // obsolete folding
    EXPECT_EQ(refusal("GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
              400);  // they disagree
    EXPECT_EQ(refusal("GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"), 400);
    EXPECT_EQ(refusal("GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"), 501);
    EXPECT_EQ(refusal("POST / HTTP/1.1\r\nContent-Length: 1025\r\n\r\n"), 413);
}

TEST(RequestParser, AHeadOverTheLimitIsRefusedBeforeItEnds) {
    const std::string head = "GET / HTTP/1.1\r\nX: " + std::string(kHead, 'a');
    EXPECT_EQ(refusal(head), 431);  // not waited for: no end in sight
}

}  // namespace
}  // namespace gpe::agent
