// The agent's HTTP/1.x request parser: bytes a client sent, any bytes, into
// one request or the status that refuses it. Apart from the server so that
// tests and the fuzzer (fuzz/fuzz_http_request.cpp) call it without sockets.
#pragma once

#include <cstddef>
#include <string_view>

namespace gpe::agent {

// One request's head, as views into the bytes it was parsed from.
struct Request {
    std::string_view method;
    std::string_view path;  // without the query
    bool keep_alive = true;
    std::string_view accept;
    std::string_view accept_encoding;
};

struct Parsed {
    enum Kind { kIncomplete, kRequest, kError } kind = kIncomplete;
    int status = 0;     // kError: the status to answer
    size_t length = 0;  // kRequest: bytes of the request, head and body
};

// The Content-Length fields seen so far: they must agree.
struct BodyLength {
    bool given = false;
    size_t bytes = 0;
};

// The request line ("GET /metrics HTTP/1.1") into `request`: 0, or the
// status that refuses it.
int parse_request_line(std::string_view line, Request& request);

// One header field into `request` (or `body`): 0, or the status that refuses it.
int parse_field(std::string_view field, Request& request, BodyLength& body);

// Parses one request at the start of `in` (views into `in` go to `request`):
// incomplete (more bytes needed), a request of `length` bytes, or an error
// status (400, 413, 431, 501, 505). At most `max_header` bytes of head and
// `max_body` of body are accepted.
Parsed parse_request(std::string_view in, size_t max_header, size_t max_body, Request& request);

}  // namespace gpe::agent
