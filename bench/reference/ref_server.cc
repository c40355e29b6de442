// ref_server.cc - the reference for the unary Dispatch and DispatchStream
// benchmarks (bench/run): a minimal gRPC C++ async server from Debian's
// libgrpc++ that implements handlers.v1.Handlers/Dispatch with an empty
// DispatchReply and DispatchStream with one DispatchStreamReply{sequence}
// per request. It decodes each request and does no other work: the same gRPC
// core as handlerd with zero work, i.e. the practical limit.
//
//   ref_server [--listen 127.0.0.1:PORT] [--threads N] [--ready-file PATH]
//
// PORT 0 picks a free port. N (default: the number of cores) completion
// queues, one polling thread each. Prints "listening ADDR" once serving and
// writes ADDR to PATH when given; SIGTERM/SIGINT shut it down (exit 0).
#include <grpcpp/grpcpp.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include "handlers/v1/handlers.grpc.pb.h"

namespace pb = handlers::v1;
using Service = pb::Handlers::AsyncService;

namespace {

// Every pending operation's tag is a Tag: the call it belongs to and what
// completed.
struct Call;
struct Tag {
  Call *call;
  int op;
};

struct Call {
  virtual ~Call() = default;
  virtual void Proceed(int op, bool ok) = 0;
};

// Unary Dispatch: request -> empty reply -> done.
class UnaryCall : public Call {
 public:
  UnaryCall(Service *svc, grpc::ServerCompletionQueue *cq)
      : svc_(svc), cq_(cq), responder_(&ctx_) {
    svc_->RequestDispatch(&ctx_, &req_, &responder_, cq_, cq_, &tag_request_);
  }
  void Proceed(int op, bool ok) override {
    if (op == 0) {  // a new call (or the queue shutting down)
      if (!ok) {
        delete this;
        return;
      }
      new UnaryCall(svc_, cq_);
      responder_.Finish(reply_, grpc::Status::OK, &tag_finish_);
    } else {
      delete this;
    }
  }

 private:
  Service *svc_;
  grpc::ServerCompletionQueue *cq_;
  grpc::ServerContext ctx_;
  pb::DispatchRequest req_;
  pb::DispatchReply reply_;
  grpc::ServerAsyncResponseWriter<pb::DispatchReply> responder_;
  Tag tag_request_{this, 0}, tag_finish_{this, 1};
};

// DispatchStream: one read always pending, replies written in order as
// reads complete, Finish once the client half-closed and all are written.
class StreamCall : public Call {
 public:
  StreamCall(Service *svc, grpc::ServerCompletionQueue *cq)
      : svc_(svc), cq_(cq), stream_(&ctx_) {
    svc_->RequestDispatchStream(&ctx_, &stream_, cq_, cq_, &tag_request_);
  }
  void Proceed(int op, bool ok) override {
    switch (op) {
      case 0:  // started
        if (!ok) {
          delete this;
          return;
        }
        new StreamCall(svc_, cq_);
        stream_.Read(&req_, &tag_read_);
        return;
      case 1:  // read
        if (ok) {
          pb::DispatchStreamReply r;
          r.set_sequence(seq_++);
          queue_.push_back(std::move(r));
          stream_.Read(&req_, &tag_read_);
          if (!writing_) WriteNext();
        } else {
          read_done_ = true;
          if (!writing_) WriteNext();
        }
        return;
      case 2:  // written
        writing_ = false;
        queue_.pop_front();
        if (!ok) {
          broken_ = true;
          queue_.clear();
        }
        WriteNext();
        return;
      default:  // finished
        delete this;
    }
  }

 private:
  void WriteNext() {
    if (!queue_.empty() && !broken_) {
      writing_ = true;
      stream_.Write(queue_.front(), &tag_write_);
    } else if (read_done_ && !finishing_) {
      finishing_ = true;
      stream_.Finish(grpc::Status::OK, &tag_finish_);
    }
  }

  Service *svc_;
  grpc::ServerCompletionQueue *cq_;
  grpc::ServerContext ctx_;
  pb::DispatchRequest req_;
  grpc::ServerAsyncReaderWriter<pb::DispatchStreamReply, pb::DispatchRequest>
      stream_;
  std::deque<pb::DispatchStreamReply> queue_;
  uint64_t seq_ = 0;
  bool writing_ = false, read_done_ = false, finishing_ = false,
       broken_ = false;
  Tag tag_request_{this, 0}, tag_read_{this, 1}, tag_write_{this, 2},
      tag_finish_{this, 3};
};

void Poll(Service *svc, grpc::ServerCompletionQueue *cq) {
  // A few calls requested ahead, as a production async server does.
  for (int i = 0; i < 16; i++) {
    new UnaryCall(svc, cq);
    new StreamCall(svc, cq);
  }
  void *t;
  bool ok;
  while (cq->Next(&t, &ok)) {
    Tag *tag = static_cast<Tag *>(t);
    tag->call->Proceed(tag->op, ok);
  }
}

[[noreturn]] void Usage() {
  std::fprintf(stderr,
               "usage: ref_server [--listen HOST:PORT] [--threads N] "
               "[--ready-file PATH]\n");
  std::exit(2);
}

}  // namespace

int main(int argc, char **argv) {
  std::string listen = "127.0.0.1:0", ready;
  long threads = sysconf(_SC_NPROCESSORS_ONLN);
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (i + 1 >= argc) Usage();
    if (a == "--listen")
      listen = argv[++i];
    else if (a == "--threads")
      threads = std::strtol(argv[++i], nullptr, 10);
    else if (a == "--ready-file")
      ready = argv[++i];
    else
      Usage();
  }
  if (threads < 1) threads = 1;

  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);  // inherited by gRPC's threads

  Service svc;
  grpc::ServerBuilder b;
  int port = 0;
  b.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  b.RegisterService(&svc);
  std::vector<std::unique_ptr<grpc::ServerCompletionQueue>> cqs;
  for (long i = 0; i < threads; i++) cqs.push_back(b.AddCompletionQueue());
  std::unique_ptr<grpc::Server> server = b.BuildAndStart();
  if (!server || port == 0) {
    std::fprintf(stderr, "ref_server: cannot listen on %s\n", listen.c_str());
    return 1;
  }
  std::string host = listen.substr(0, listen.rfind(':'));
  std::string addr = host + ":" + std::to_string(port);
  std::vector<std::thread> pollers;
  for (auto &cq : cqs) pollers.emplace_back(Poll, &svc, cq.get());
  std::printf("listening %s\n", addr.c_str());
  std::fflush(stdout);
  if (!ready.empty()) {
    std::string tmp = ready + ".tmp";
    {
      std::ofstream f(tmp);
      f << addr << "\n";
    }
    std::rename(tmp.c_str(), ready.c_str());
  }
  int sig;
  sigwait(&set, &sig);
  server->Shutdown(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(500));
  for (auto &cq : cqs) cq->Shutdown();
  for (auto &t : pollers) t.join();
  return 0;
}
