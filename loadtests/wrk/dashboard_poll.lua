-- Polls /dashboard/data as the page does: only the points of the last two seconds.
request = function()
  return wrk.format("GET", "/dashboard/data?since=" .. ((os.time() - 2) * 1000))
end
