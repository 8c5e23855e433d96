#!/usr/bin/env escript
%%! -noinput
%% The OTP side of `cargo xtask bench`: the work of hotcode's `runtime` and `upgrade`
%% benchmarks, done by Erlang/OTP on the same machine in the same run, so the two sets of
%% figures can be read side by side.
%%
%% Usage: escript xtask/otp/bench.erl OUT.json [quick]
%%
%% A gen_server module `otp_bench_srv` is compiled here from source in two versions (a
%% counter map in version 1; `{v2, Map}` in version 2, with `code_change/3` converting up
%% and down). Then:
%%
%% - calls: 100 servers, 2 caller processes calling their own half round robin (each
%%   checks that its server's counter moves by exactly one per reply); calls per second
%%   over three 1 s windows (median);
%% - spawn and memory: 100,000 servers started one at a time (`gen_server:start`, which
%%   returns after `init/1`), each start timed; `erlang:memory(total)` and the VM's RSS
%%   before and after, per process; then each answers one call and is stopped;
%% - upgrades at 100, 1,000 and 10,000 servers with the 2 callers busy: per cycle, the
%%   previous old version is purged (outside the window), then `sys:suspend` of every
%%   server, `code:load_binary` of the other version, `sys:change_code` of every server
%%   (`{down, "1"}` in version 2 before the load, as a relup orders a downgrade),
%%   `sys:resume` of every server, one after the other as release_handler does. The
%%   window runs from the first suspend to the last resume returning (sys:resume is
%%   synchronous). The callers' completed calls are counted during each window and over a
%%   1 s steady period before the cycles.
%%
%% Writes one flat JSON object of numbers (keys without the `otp.` prefix, which xtask adds).
-mode(compile).

-define(MOD, otp_bench_srv).
-define(TIMEOUT, 10000).

main([Out]) -> main([Out, "full"]);
main([Out, Mode]) ->
    Quick = Mode =:= "quick",
    {V1, V2} = {compile_version("1"), compile_version("2")},
    {module, ?MOD} = code:load_binary(?MOD, "otp_bench_srv.erl", V1),
    Started = now_us(),
    Calls = calls(100, case Quick of true -> 200; false -> 1000 end),
    Spawn = spawn_memory(case Quick of true -> 2000; false -> 100000 end),
    Up100 = upgrade(100, case Quick of true -> 4; false -> 200 end, V1, V2, ""),
    Up1k = upgrade(1000, case Quick of true -> 2; false -> 40 end, V1, V2, "_1k"),
    Up10k = upgrade(10000, case Quick of true -> 2; false -> 10 end, V1, V2, "_10k"),
    Failed = [{K, V} || {K, V} <- Calls ++ Up100 ++ Up1k ++ Up10k,
                        lists:suffix("failed_calls", K) orelse K =:= "calls_failed_100",
                        V =/= 0],
    Failed =:= [] orelse begin
        io:format(standard_error, "otp: failed calls: ~p~n", [Failed]),
        halt(1)
    end,
    Fields = [{"otp_release", list_to_integer(erlang:system_info(otp_release))},
              {"schedulers", erlang:system_info(schedulers_online)}]
        ++ Calls ++ Spawn ++ Up100 ++ Up1k ++ Up10k
        ++ [{"duration_s", (now_us() - Started) / 1.0e6}],
    [io:format(standard_error, "otp: ~-46s ~s~n", [K, number(V)]) || {K, V} <- Fields],
    ok = file:write_file(Out, json(Fields)),
    io:format(standard_error, "otp: wrote ~s~n", [Out]);
main(_) ->
    io:format(standard_error, "usage: escript bench.erl OUT.json [quick]~n", []),
    halt(2).

%% The module, version Vsn, from source.
compile_version(Vsn) ->
    State = case Vsn of "1" -> "S"; "2" -> "{v2, S}" end,
    Src = lists:flatten(io_lib:format(
        "-module(otp_bench_srv).~n"
        "-vsn(\"~s\").~n"
        "-behaviour(gen_server).~n"
        "-export([init/1, handle_call/3, handle_cast/2, code_change/3]).~n"
        "init([]) -> {ok, wrap(#{})}.~n"
        "wrap(S) -> ~s.~n"
        "handle_call({incr, K}, _From, ~s) ->~n"
        "    N = maps:get(K, S, 0) + 1, {reply, {ok, N, v~s}, wrap(S#{K => N})};~n"
        "handle_call({get, K}, _From, ~s = W) -> {reply, {ok, maps:get(K, S, 0), v~s}, W}.~n"
        "handle_cast(_, W) -> {noreply, W}.~n"
        "code_change({down, _}, {v2, S}, _Extra) -> {ok, S};~n"
        "code_change(_Old, S, _Extra) when is_map(S) -> {ok, wrap(S)}.~n",
        [Vsn, State, State, Vsn, State, Vsn])),
    {ok, Tokens, _} = erl_scan:string(Src),
    Forms = [begin {ok, F} = erl_parse:parse_form(Ts), F end || Ts <- split_forms(Tokens, [])],
    {ok, ?MOD, Bin} = compile:forms(Forms, [binary, return_errors]),
    Bin.

split_forms([], []) -> [];
split_forms([{dot, _} = D | Rest], Acc) -> [lists:reverse([D | Acc]) | split_forms(Rest, [])];
split_forms([T | Rest], Acc) -> split_forms(Rest, [T | Acc]).

now_us() -> erlang:monotonic_time(microsecond).

start_servers(N) ->
    [begin {ok, P} = gen_server:start(?MOD, [], []), P end || _ <- lists:seq(1, N)].

stop_servers(Pids) -> [ok = gen_server:stop(P) || P <- Pids], ok.

%% Two callers, each owning every other server; counter 1 counts good calls, 2 bad ones.
start_callers(Pids) ->
    Counts = counters:new(2, [write_concurrency]),
    Own = fun(C) -> [P || {I, P} <- lists:zip(lists:seq(0, length(Pids) - 1), Pids),
                          I rem 2 =:= C] end,
    Callers = [spawn_link(fun() -> caller([{P, 1} || P <- Own(C)], Counts) end)
               || C <- [0, 1]],
    wait_for(Counts, 200),
    {Callers, Counts}.

wait_for(Counts, N) ->
    case counters:get(Counts, 1) >= N of
        true -> ok;
        false -> timer:sleep(1), wait_for(Counts, N)
    end.

caller(Expect, Counts) ->
    Next = [call_one(P, E, Counts) || {P, E} <- Expect],
    receive {stop, From} -> From ! {stopped, self()}
    after 0 -> caller(Next, Counts)
    end.

call_one(P, E, Counts) ->
    case catch gen_server:call(P, {incr, k}, ?TIMEOUT) of
        {ok, E, _} -> counters:add(Counts, 1, 1), {P, E + 1};
        {ok, N, _} when is_integer(N) -> counters:add(Counts, 2, 1), {P, N + 1};
        _ -> counters:add(Counts, 2, 1), {P, E}
    end.

stop_callers(Callers) ->
    [C ! {stop, self()} || C <- Callers],
    [receive {stopped, C} -> ok end || C <- Callers],
    ok.

%% Calls per second at N servers, 2 callers: the median of three windows of Ms.
calls(N, Ms) ->
    Pids = start_servers(N),
    {Callers, Counts} = start_callers(Pids),
    timer:sleep(Ms div 2),
    Rates = lists:sort([rate(Counts, Ms) || _ <- [1, 2, 3]]),
    stop_callers(Callers),
    Failed = counters:get(Counts, 2),
    stop_servers(Pids),
    [{"calls_per_s_100", lists:nth(2, Rates)}, {"calls_failed_100", Failed}].

rate(Counts, Ms) ->
    {C0, T0} = {counters:get(Counts, 1), now_us()},
    timer:sleep(Ms),
    {C1, T1} = {counters:get(Counts, 1), now_us()},
    (C1 - C0) / ((T1 - T0) / 1.0e6).

%% N idle servers: start time of each, memory and RSS per server; then a call to each and
%% a stop of each.
spawn_memory(N) ->
    erlang:garbage_collect(),
    {Mem0, Rss0} = {erlang:memory(total), rss()},
    T0 = now_us(),
    Timed = [begin
                 S = erlang:monotonic_time(nanosecond),
                 {ok, P} = gen_server:start(?MOD, [], []),
                 {P, (erlang:monotonic_time(nanosecond) - S) / 1000}
             end || _ <- lists:seq(1, N)],
    erlang:garbage_collect(),
    {Mem1, Rss1} = {erlang:memory(total), rss()},
    Pids = [P || {P, _} <- Timed],
    Times = lists:sort([T || {_, T} <- Timed]),
    ProcMem = lists:sort([M || P <- Pids, {memory, M} <- [erlang:process_info(P, memory)]]),
    Answered = length([ok || P <- Pids, {ok, 1, v1} <- [gen_server:call(P, {incr, k})]]),
    stop_servers(Pids),
    Total = (now_us() - T0) / 1.0e6,
    Answered =:= N orelse error({answered, Answered, N}),
    [{"processes_measured", N},
     {"spawn_us_median", percentile(Times, 0.5)},
     {"spawn_us_p99", percentile(Times, 0.99)},
     {"memory_bytes_per_process", (Mem1 - Mem0) / N},
     {"rss_bytes_per_process", (Rss1 - Rss0) / N},
     {"process_info_memory_bytes_median", percentile(ProcMem, 0.5)},
     {"spawn_call_stop_s", Total}].

%% The VM's resident set, in bytes.
rss() ->
    {ok, Status} = file:read_file("/proc/self/status"),
    [Line] = [L || L <- binary:split(Status, <<"\n">>, [global]),
                   binary:part(L, 0, min(6, byte_size(L))) =:= <<"VmRSS:">>],
    [_, Kb | _] = binary:split(Line, [<<" ">>, <<"\t">>], [global, trim_all]),
    binary_to_integer(Kb) * 1024.

%% Upgrade cycles at N servers; keys suffixed with Tag.
upgrade(N, Cycles, V1, V2, Tag) ->
    Pids = start_servers(N),
    {Callers, Counts} = start_callers(Pids),
    Steady = rate(Counts, 1000),
    WarmUp = 2,
    Results = [cycle(K, Pids, V1, V2, Counts) || K <- lists:seq(1, WarmUp + Cycles)],
    Measured = lists:nthtail(WarmUp, Results),
    stop_callers(Callers),
    Failed = counters:get(Counts, 2),
    Windows = lists:sort([W || {W, _} <- Measured]),
    WindowS = lists:sum(Windows) / 1.0e6,
    During = lists:sum([C || {_, C} <- Measured]),
    stop_servers(Pids),
    code:purge(?MOD),
    {module, ?MOD} = code:load_binary(?MOD, "otp_bench_srv.erl", V1),
    Key = fun(K) -> "upgrade" ++ Tag ++ "." ++ K end,
    [{Key("processes"), N},
     {Key("cycles"), Cycles},
     {Key("window_ms_p50"), percentile(Windows, 0.5) / 1000},
     {Key("window_ms_p99"), percentile(Windows, 0.99) / 1000},
     {Key("steady_calls_per_s"), Steady},
     {Key("calls_per_cycle_during_window"), During / Cycles},
     {Key("steady_calls_per_window"), Steady * WindowS / Cycles},
     {Key("callers_rate_during_vs_steady"), (During / WindowS) / Steady},
     {Key("failed_calls"), Failed}].

%% One cycle: odd ones go up to version 2, even ones back down to 1. Returns the window
%% in microseconds and the callers' calls completed in it.
cycle(K, Pids, V1, V2, Counts) ->
    true = code:soft_purge(?MOD),
    C0 = counters:get(Counts, 1),
    T0 = now_us(),
    [ok = sys:suspend(P, ?TIMEOUT) || P <- Pids],
    case K rem 2 of
        1 ->
            {module, ?MOD} = code:load_binary(?MOD, "otp_bench_srv.erl", V2),
            [ok = sys:change_code(P, ?MOD, "1", [], ?TIMEOUT) || P <- Pids];
        0 ->
            [ok = sys:change_code(P, ?MOD, {down, "1"}, [], ?TIMEOUT) || P <- Pids],
            {module, ?MOD} = code:load_binary(?MOD, "otp_bench_srv.erl", V1)
    end,
    [ok = sys:resume(P, ?TIMEOUT) || P <- Pids],
    T1 = now_us(),
    {T1 - T0, counters:get(Counts, 1) - C0}.

percentile(Sorted, P) ->
    Rank = max(1, min(length(Sorted), ceil(P * length(Sorted)))),
    lists:nth(Rank, Sorted).

number(V) when is_integer(V) -> integer_to_list(V);
number(V) when is_float(V) -> float_to_list(V, [{decimals, 6}, compact]).

json(Fields) ->
    Body = lists:join(",\n", [io_lib:format("  \"~s\": ~s", [K, number(V)]) || {K, V} <- Fields]),
    iolist_to_binary(["{\n", Body, "\n}\n"]).
