#include "request.hpp"

#include <algorithm>
#include <cctype>
#include <cstddef>
#include <string>
#include <string_view>

#include "negotiation.hpp"

namespace gpe::agent {

namespace {

bool is_token_char(char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 ||
           std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

}  // namespace

int parse_request_line(std::string_view line, Request& request) {
    const size_t sp1 = line.find(' ');
    const size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos)
        return 400;
    request.method = line.substr(0, sp1);
    std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    const std::string_view version = line.substr(sp2 + 1);
    if (request.method.empty() ||
        !std::all_of(request.method.begin(), request.method.end(), is_token_char)) {
        return 400;
    }
    if (version != "HTTP/1.1" && version != "HTTP/1.0")
        return version.starts_with("HTTP/") ? 505 : 400;
    request.keep_alive = version == "HTTP/1.1";
    for (const std::string_view scheme : {"http://", "https://"}) {  // absolute form
        if (target.size() > scheme.size() && iequals(target.substr(0, scheme.size()), scheme)) {
            const size_t slash = target.find('/', scheme.size());
            target = slash == std::string_view::npos ? "/" : target.substr(slash);
        }
    }
    if (!target.starts_with('/')) return 400;
    request.path = target.substr(0, target.find('?'));
    return 0;
}

int parse_field(std::string_view field, Request& request, BodyLength& body) {
    const size_t colon = field.find(':');
    if (colon == 0 || colon == std::string_view::npos ||
        !std::all_of(field.begin(), field.begin() + static_cast<std::ptrdiff_t>(colon),
                     is_token_char)) {
        return 400;  // also folded lines and spaces before the colon
    }
    const std::string_view name = field.substr(0, colon);
    const std::string_view value = trim(field.substr(colon + 1));
    if (iequals(name, "connection")) {
        if (has_token(value, "close")) request.keep_alive = false;
        if (has_token(value, "keep-alive")) request.keep_alive = true;
    } else if (iequals(name, "accept")) {
        request.accept = value;
    } else if (iequals(name, "accept-encoding")) {
        request.accept_encoding = value;
    } else if (iequals(name, "content-length")) {
        if (value.empty() || value.size() > 12 ||
            value.find_first_not_of("0123456789") != std::string_view::npos) {
            return 400;
        }
        const size_t n = std::stoul(std::string(value));
        if (body.given && n != body.bytes) return 400;
        body = {true, n};
    } else if (iequals(name, "transfer-encoding")) {
        return 501;  // no chunked bodies: nothing here takes a body
    }
    return 0;
}

Parsed parse_request(std::string_view in, size_t max_header, size_t max_body, Request& request) {
    size_t start = 0;
    while (in.substr(start, 2) == "\r\n") start += 2;  // empty lines before a request
    const size_t end = in.find("\r\n\r\n", start);
    if (end == std::string_view::npos || end - start > max_header) {
        if (in.size() - start > max_header) return {Parsed::kError, 431, 0};
        return {};
    }
    std::string_view head = in.substr(start, end - start + 2);  // each line ends in CRLF
    const size_t line_end = head.find("\r\n");
    if (const int status = parse_request_line(head.substr(0, line_end), request))
        return {Parsed::kError, status, 0};
    head.remove_prefix(line_end + 2);
    BodyLength body;
    while (!head.empty()) {
        const size_t eol = head.find("\r\n");
        if (const int status = parse_field(head.substr(0, eol), request, body))
            return {Parsed::kError, status, 0};
        head.remove_prefix(eol + 2);
    }
    if (body.bytes > max_body) return {Parsed::kError, 413, 0};
    const size_t total = end + 4 + body.bytes;
    if (in.size() < total) return {};  // the (small) body is still coming
    return {Parsed::kRequest, 0, total};
}

}  // namespace gpe::agent
