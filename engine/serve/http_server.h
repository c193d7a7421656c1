// A small HTTP/1.1 server (keep-alive, Boost.Beast over Boost.Asio, header-only) that hands every
// complete request to one handler and sends back whatever the handler replies, from any thread and
// at any later time: the /predict handler replies from the batcher thread once its batch ran.
//
// Transport rules, answered here without calling the handler: a body over payload_limit gets 413
// and the connection closes; a malformed request gets 400; a client is disconnected when its
// request's header, or then its body, takes longer than read_timeout to arrive (an idle keep-alive
// connection too, after read_timeout without a new request).
// Shutdown (SIGTERM or SIGINT when handle_signals, or stop()): the listening socket closes at once
// (new connections are refused), idle connections close, requests already received are answered
// (then their connections close), and run() returns when the last one is sent.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace engine::serve {

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string path;    // target without the query string
  std::string body;
};

struct HttpResponse {
  int status = 200;
  std::string body;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;  // more headers (Retry-After)
};

// Sends the response of one request; call it exactly once, from any thread.
using Reply = std::function<void(HttpResponse)>;
using Handler = std::function<void(HttpRequest, Reply)>;

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 8080;  // 0: any free port (see HttpServer::port)
  int threads = 2;  // threads reading, parsing and writing requests (and running the handler)
  size_t payload_limit = 2000000;  // bytes of a request body
  double read_timeout_s = 10;      // see above (also the limit for writing an answer)
  bool handle_signals = true;      // SIGTERM/SIGINT shut the server down
};

class HttpServer {
 public:
  // Binds and listens (throws engine::Error when it cannot); serving starts in run().
  // error_body(status, message, type) writes the body of the errors the server answers itself.
  HttpServer(const HttpOptions& options, Handler handler,
             std::function<std::string(const std::string& message, const std::string& type)> error_body);
  ~HttpServer();
  int port() const;  // the port bound (the one chosen when options.port was 0)
  // Serves on options.threads threads (this one included) until shutdown, then returns.
  void run();
  // Starts the shutdown described above; thread-safe, returns at once.
  void stop();
  // Called once, on a server thread, when a shutdown starts (logging).
  void on_shutdown(std::function<void()> f);

  struct Impl;  // the event loop and connections (http_server.cpp)

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace engine::serve
