// Helpers for the `engine serve` tests: an HTTP/1.1 client over loopback with a deadline on every
// request (Boost.Beast), and the real server binary as a child process on an ephemeral port that
// it reports through --port-file. Every wait is bounded; a server still alive at the end of a test
// is killed by its PID.
#pragma once
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "cli_helpers.h"

namespace engine::test {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

struct HttpResult {
  int status = -1;  // -1: no answer (connection refused or closed, or the deadline passed)
  std::string body, retry_after, content_type;
  std::string error;  // why there is no answer
};

// One keep-alive connection to 127.0.0.1:port; reconnects when the server closed it.
class HttpClient {
 public:
  explicit HttpClient(int port, double timeout_s = 60) : port_(port), timeout_s_(timeout_s) {}

  HttpResult request(const std::string& method, const std::string& target, const std::string& body = "") {
    HttpResult out;
    if (!connected_ && !connect(out)) return out;
    http::request<http::string_body> req{http::string_to_verb(method), target, 11};
    req.set(http::field::host, "127.0.0.1");
    req.set(http::field::content_type, "application/json");
    req.body() = body;
    req.prepare_payload();
    req.keep_alive(true);
    http::response<http::string_body> res;
    http::response_parser<http::string_body> parser;
    parser.body_limit(64 << 20);
    beast::error_code result = net::error::timed_out;
    stream_.expires_after(std::chrono::milliseconds(int64_t(timeout_s_ * 1000)));
    http::async_write(stream_, req, [&](beast::error_code ec, size_t) {
      if (ec) {
        result = ec;
        return;
      }
      http::async_read(stream_, buffer_, parser, [&](beast::error_code ec2, size_t) { result = ec2; });
    });
    ioc_.restart();
    ioc_.run();
    if (result) {
      out.error = result.message();
      close();
      return out;
    }
    res = parser.release();
    out.status = res.result_int();
    out.body = res.body();
    out.retry_after = std::string(res[http::field::retry_after]);
    out.content_type = std::string(res[http::field::content_type]);
    if (!res.keep_alive()) close();
    return out;
  }

  HttpResult post(const std::string& target, const std::string& body) { return request("POST", target, body); }
  HttpResult get(const std::string& target) { return request("GET", target); }

 private:
  bool connect(HttpResult& out) {
    beast::error_code result = net::error::timed_out;
    stream_.expires_after(std::chrono::milliseconds(int64_t(timeout_s_ * 1000)));
    stream_.async_connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), uint16_t(port_)),
                          [&](beast::error_code ec) { result = ec; });
    ioc_.restart();
    ioc_.run();
    if (result) {
      out.error = "connect: " + result.message();
      close();
      return false;
    }
    connected_ = true;
    return true;
  }
  void close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.close();
    buffer_.clear();
    connected_ = false;
  }

  int port_;
  double timeout_s_;
  net::io_context ioc_;
  beast::tcp_stream stream_{ioc_};
  beast::flat_buffer buffer_;
  bool connected_ = false;
};

// `engine serve --model DIR --port 0 --port-file F args...` as a child process.
class ServerProcess {
 public:
  ServerProcess(const std::string& model_dir, const std::vector<std::string>& args) {
    dir_ = fs::temp_directory_path() / ("engine_serve_" + unique_suffix());
    fs::create_directories(dir_);
    std::vector<std::string> argv = {engine_binary(), "serve", "--model", model_dir, "--port", "0",
                                     "--port-file", (dir_ / "port").string()};
    argv.insert(argv.end(), args.begin(), args.end());
    const std::string log = (dir_ / "stderr.txt").string();
    std::vector<char*> c;  // built before fork: the child only redirects and execs
    for (std::string& a : argv) c.push_back(a.data());
    c.push_back(nullptr);
    pid_ = fork();
    if (pid_ == 0) {
      const int err = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      const int null = open("/dev/null", O_RDWR);
      dup2(err, 2);
      dup2(null, 0);
      dup2(null, 1);
      execv(c[0], c.data());
      _exit(127);
    }
  }
  ~ServerProcess() {
    if (pid_ > 0 && exit_code_ == kRunning) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  // Waits (at most timeout_s) for the port file and a 200 from /health. False if the server died
  // or never became healthy.
  bool wait_ready(double timeout_s = 120) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(int64_t(timeout_s * 1000));
    while (std::chrono::steady_clock::now() < deadline) {
      if (!alive()) return false;
      if (port_ == 0 && fs::exists(dir_ / "port")) port_ = std::stoi(read_text(dir_ / "port"));
      if (port_ != 0 && HttpClient(port_, 5).get("/health").status == 200) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

  int port() const { return port_; }
  std::string log() const { return read_text(dir_ / "stderr.txt"); }

  bool alive() {
    if (exit_code_ != kRunning) return false;
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      return false;
    }
    return true;
  }
  void signal(int sig) { kill(pid_, sig); }
  // Waits at most timeout_s for the process to end; its exit code, or -1 if it is still running.
  int wait_exit(double timeout_s) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(int64_t(timeout_s * 1000));
    while (alive() && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    return exit_code_ == kRunning ? -1 : exit_code_;
  }

 private:
  static constexpr int kRunning = -1000;
  fs::path dir_;
  pid_t pid_ = -1;
  int port_ = 0;
  int exit_code_ = kRunning;
};

}  // namespace engine::test
