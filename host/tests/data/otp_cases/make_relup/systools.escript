#!/usr/bin/env escript
%% Prints what OTP's systools:make_relup/4 writes for a make_relup scenario of this
%% directory: `escript systools.escript SCENARIO`. The test never runs it (it needs
%% Erlang/OTP); it is how the `{up, ...}` and `{down, ...}` of a scenario are taken from
%% OTP rather than from hotcode. Each module becomes an empty .beam, each release gets
%% kernel, stdlib and sasl (systools wants them; the scripts leave them out), and `{hotcode,
%% Vsn}` has no place here: both releases run on this erts.
-mode(compile).

main([Scenario]) ->
    {ok, Terms} = file:consult(Scenario),
    Dir = string:trim(os:cmd("mktemp -d")),
    Base = [{A, vsn(A)} || A <- [kernel, stdlib, sasl]],
    Erts = erlang:system_info(version),
    [app(Dir, App) || {app, _, _, _, _} = App <- Terms] ++
        [app(Dir, {app, N, V, M, U, I}) || {app, N, V, M, U, I} <- Terms],
    [ok = file:write_file(filename:join([Dir, "lib", atom_to_list(A) ++ "-" ++ V, "ebin",
                                         atom_to_list(A) ++ ".appup"]),
                          io_lib:format("~tp.~n", [Appup]))
     || {appup, A, V, Appup} <- Terms],
    [ok = file:write_file(filename:join(Dir, "r" ++ V ++ ".rel"),
                          io_lib:format("~tp.~n", [{release, {"r", V}, {erts, Erts}, Base ++ Apps}]))
     || {rel, V, Apps} <- Terms],
    ok = file:set_cwd(Dir),
    {ok, {_, [{_, _, Up}], [{_, _, Down}]}, _, _} =
        systools:make_relup("r2", ["r1"], ["r1"], [{path, ["lib/*/ebin"]}, silent, noexec]),
    io:format("{up,~n ~tp}.~n{down,~n ~tp}.~n", [Up, Down]),
    os:cmd("rm -rf " ++ Dir).

vsn(App) ->
    application:load(App),
    {ok, V} = application:get_key(App, vsn),
    V.

app(Dir, {app, Name, Vsn, Mods, Uses}) ->
    app(Dir, {app, Name, Vsn, Mods, Uses, []});
app(Dir, {app, Name, Vsn, Mods, Uses, Incs}) ->
    Ebin = filename:join([Dir, "lib", atom_to_list(Name) ++ "-" ++ Vsn, "ebin"]),
    ok = filelib:ensure_dir(filename:join(Ebin, "x")),
    [begin
         {ok, M, Bin} = compile:forms([{attribute, 1, module, M}], []),
         ok = file:write_file(filename:join(Ebin, atom_to_list(M) ++ ".beam"), Bin)
     end || M <- Mods],
    Spec = {application, Name, [{description, ""}, {vsn, Vsn}, {modules, Mods},
                                {registered, []}, {applications, [kernel, stdlib | Uses]},
                                {included_applications, Incs}]},
    ok = file:write_file(filename:join(Ebin, atom_to_list(Name) ++ ".app"),
                         io_lib:format("~tp.~n", [Spec])).
