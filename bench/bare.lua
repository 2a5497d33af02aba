-- wrk script of bench/run for the ceiling (/bare): one static create-callback-sized body.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"customerNumber": "+1 415 555 2671", "customerName": "Bench Customer", ' ..
           '"agentId": "a1000000-0000-4000-8000-000000000001", ' ..
           '"queueId": "b1000000-0000-4000-8000-000000000001", "consentGiven": true}'
