%% ch_app, version 1: the channel allocator of the OTP design principles.
{application, ch_app,
 [{description, "Channel allocator"},
  {vsn, "1"},
  {modules, [ch_app, ch_sup, ch3]},
  {registered, [ch3]},
  {applications, []},
  {mod, {ch_app, []}}]}.
