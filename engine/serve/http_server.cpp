#include "engine/serve/http_server.h"

#include <array>
#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "engine/error.h"

namespace engine::serve {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

namespace {

std::chrono::steady_clock::duration seconds(double s) {
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(s));
}

class Session;

}  // namespace

struct HttpServer::Impl {
  HttpOptions options;
  Handler handler;
  std::function<std::string(const std::string&, const std::string&)> error_body;
  std::function<void()> shutdown_callback;
  net::io_context ioc;
  tcp::acceptor acceptor{net::make_strand(ioc)};  // accept and shutdown run on this strand
  std::optional<net::signal_set> signals;
  std::atomic<bool> draining{false};
  std::mutex sessions_mu;
  std::map<uint64_t, std::weak_ptr<Session>> sessions;  // open connections, to close on shutdown
  uint64_t next_session = 0;
  int port = 0;

  explicit Impl(int threads) : ioc(threads) {}
  void accept();
  void begin_shutdown();
  void forget(uint64_t id) {
    std::lock_guard<std::mutex> lock(sessions_mu);
    sessions.erase(id);
  }
};

namespace {

// One connection: reads requests one after another (keep-alive), hands each to the handler, writes
// its reply. Every operation of a session runs on its own strand.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, HttpServer::Impl& server, uint64_t id)
      : stream_(std::move(socket)), executor_(stream_.get_executor()), server_(server), id_(id) {}
  ~Session() { server_.forget(id_); }

  void start() {
    net::dispatch(executor_, [self = shared_from_this()] { self->read(); });
  }
  // Shutdown: a connection waiting for its next request closes; one with a request in hand finishes it.
  void close_if_idle() {
    net::post(executor_, [self = shared_from_this()] {
      if (!self->busy_) self->close();
    });
  }

 private:
  void read() {
    if (server_.draining) return close();
    parser_.emplace();
    parser_->body_limit(server_.options.payload_limit);
    stream_.expires_after(seconds(server_.options.read_timeout_s));
    http::async_read_header(stream_, buffer_, *parser_,
                            [self = shared_from_this()](beast::error_code ec, size_t) { self->on_header(ec); });
  }

  void on_header(beast::error_code ec) {
    if (ec) return on_read_error(ec);
    const auto& req = parser_->get();
    if (beast::iequals(req[http::field::expect], "100-continue")) {
      // curl asks before sending a larger body, and waits a second for this answer if it gets none.
      auto cont = std::make_shared<http::response<http::empty_body>>(http::status::continue_, req.version());
      http::async_write(stream_, *cont, [self = shared_from_this(), cont](beast::error_code ec2, size_t) {
        if (ec2) return self->close();
        self->read_body();
      });
      return;
    }
    read_body();
  }

  void read_body() {
    stream_.expires_after(seconds(server_.options.read_timeout_s));
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, size_t) { self->on_body(ec); });
  }

  void on_read_error(beast::error_code ec) {
    if (ec == http::error::body_limit) {
      keep_alive_ = false;
      return write(error(413, "the request body is larger than the payload limit (" +
                                  std::to_string(server_.options.payload_limit) + " bytes, --payload-limit)",
                         "validation"));
    }
    // A client that went away or went quiet (timeout) gets nothing; a malformed request gets 400.
    if (ec == http::error::end_of_stream || ec == beast::error::timeout || ec == net::error::operation_aborted ||
        ec == net::error::connection_reset || ec == http::error::partial_message)
      return close();
    keep_alive_ = false;
    write(error(400, "malformed HTTP request: " + ec.message(), "validation"));
  }

  HttpResponse error(int status, const std::string& message, const std::string& type) {
    HttpResponse r;
    r.status = status;
    r.body = server_.error_body(message, type);
    return r;
  }

  void on_body(beast::error_code ec) {
    if (ec) return on_read_error(ec);
    busy_ = true;
    http::request<http::string_body> req = parser_->release();
    keep_alive_ = req.keep_alive();
    version_ = req.version();
    HttpRequest r;
    r.method = std::string(req.method_string());
    std::string target(req.target());
    r.path = target.substr(0, target.find('?'));
    r.body = std::move(req.body());
    // The reply may come from another thread, much later: it keeps the session and the server's
    // event loop alive until it is written.
    auto self = shared_from_this();
    auto work = std::make_shared<net::executor_work_guard<net::io_context::executor_type>>(
        net::make_work_guard(server_.ioc));
    auto replied = std::make_shared<std::atomic<bool>>(false);
    Reply reply = [self, work, replied](HttpResponse res) {
      if (replied->exchange(true)) return;
      net::post(self->executor_, [self, work, res = std::move(res)]() mutable { self->write(std::move(res)); });
    };
    try {
      server_.handler(std::move(r), reply);
    } catch (const std::exception& e) {
      reply(error(500, e.what(), "backend"));
    }
  }

  void write(HttpResponse res) {
    busy_ = true;
    auto msg = std::make_shared<http::response<http::string_body>>(static_cast<http::status>(res.status), version_);
    msg->set(http::field::server, "engine");
    msg->set(http::field::content_type, res.content_type);
    for (const auto& [k, v] : res.headers) msg->set(k, v);
    msg->body() = std::move(res.body);
    msg->keep_alive(keep_alive_ && !server_.draining);
    msg->prepare_payload();
    stream_.expires_after(seconds(server_.options.read_timeout_s));
    http::async_write(stream_, *msg, [self = shared_from_this(), msg](beast::error_code ec, size_t) {
      self->busy_ = false;
      if (ec) return self->close();
      if (!msg->keep_alive()) return self->linger_then_close();
      self->read();
    });
  }

  // Closing a socket with unread input resets the connection, and the client may lose the answer
  // (a 413 sent before its body was read): stop sending, read what is left for a second, then close.
  void linger_then_close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream_.expires_after(std::chrono::seconds(1));
    discard();
  }
  void discard() {
    auto buf = std::make_shared<std::array<char, 65536>>();
    stream_.async_read_some(net::buffer(*buf), [self = shared_from_this(), buf](beast::error_code ec, size_t) {
      if (ec) return self->close();
      self->discard();
    });
  }

  void close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.close();
  }

  beast::tcp_stream stream_;
  net::any_io_executor executor_;
  HttpServer::Impl& server_;
  uint64_t id_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  bool busy_ = false;  // a request is being handled or its reply written
  bool keep_alive_ = true;
  unsigned version_ = 11;
};

}  // namespace

void HttpServer::Impl::accept() {
  acceptor.async_accept(net::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
    if (!acceptor.is_open()) return;  // shutting down
    if (!ec) {
      std::shared_ptr<Session> s;
      {
        std::lock_guard<std::mutex> lock(sessions_mu);
        const uint64_t id = next_session++;
        s = std::make_shared<Session>(std::move(socket), *this, id);
        sessions[id] = s;
      }
      s->start();
    }
    accept();
  });
}

void HttpServer::Impl::begin_shutdown() {
  if (draining.exchange(true)) return;
  beast::error_code ec;
  acceptor.close(ec);
  if (signals) signals->cancel(ec);
  if (shutdown_callback) shutdown_callback();
  // Taken under the lock, used and dropped outside it: dropping the last reference to a session
  // runs its destructor, which takes the lock too.
  std::vector<std::shared_ptr<Session>> open;
  {
    std::lock_guard<std::mutex> lock(sessions_mu);
    for (auto& [id, weak] : sessions)
      if (auto s = weak.lock()) open.push_back(std::move(s));
  }
  for (auto& s : open) s->close_if_idle();
}

HttpServer::HttpServer(const HttpOptions& options, Handler handler,
                       std::function<std::string(const std::string&, const std::string&)> error_body)
    : impl_(std::make_unique<Impl>(std::max(1, options.threads))) {
  impl_->options = options;
  impl_->handler = std::move(handler);
  impl_->error_body = std::move(error_body);
  beast::error_code ec;
  const net::ip::address address = net::ip::make_address(options.host, ec);
  ENGINE_CHECK(!ec, "--host ", options.host, " is not an IP address (", ec.message(), ")");
  ENGINE_CHECK(options.port >= 0 && options.port <= 65535, "--port ", options.port, " is not a port number");
  const tcp::endpoint endpoint(address, static_cast<unsigned short>(options.port));
  tcp::acceptor& a = impl_->acceptor;
  a.open(endpoint.protocol(), ec);
  if (!ec) a.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) a.bind(endpoint, ec);
  if (!ec) a.listen(net::socket_base::max_listen_connections, ec);
  ENGINE_CHECK(!ec, "cannot listen on ", options.host, ":", options.port, ": ", ec.message());
  impl_->port = a.local_endpoint().port();
  if (options.handle_signals) {
    impl_->signals.emplace(impl_->acceptor.get_executor(), SIGINT, SIGTERM);
    impl_->signals->async_wait([this](beast::error_code e, int) {
      if (!e) impl_->begin_shutdown();
    });
  }
}

HttpServer::~HttpServer() = default;

int HttpServer::port() const { return impl_->port; }

void HttpServer::on_shutdown(std::function<void()> f) { impl_->shutdown_callback = std::move(f); }

void HttpServer::stop() {
  net::post(impl_->acceptor.get_executor(), [this] { impl_->begin_shutdown(); });
}

void HttpServer::run() {
  net::post(impl_->acceptor.get_executor(), [this] { impl_->accept(); });
  std::vector<std::thread> threads;
  for (int i = 1; i < impl_->options.threads; ++i) threads.emplace_back([this] { impl_->ioc.run(); });
  impl_->ioc.run();
  for (std::thread& t : threads) t.join();
}

}  // namespace engine::serve
